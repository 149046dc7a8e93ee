"""u64 wire ids in signed 64-bit columns (protocol.wire.ids), used by both stores."""

from __future__ import annotations

from hypothesis import given, strategies as st

from appliance.protocol.wire.constants import STORED_U64_MAX, U64_MAX
from appliance.protocol.wire.ids import LOWEST_DB_ID, from_db_id, to_db_id


def test_the_edges_map_as_stated() -> None:
    assert to_db_id(0) is None
    assert from_db_id(None) == 0
    assert to_db_id(1) == 1
    assert to_db_id(STORED_U64_MAX) == STORED_U64_MAX
    assert to_db_id(STORED_U64_MAX + 1) == LOWEST_DB_ID == -(2**63)
    assert to_db_id(U64_MAX) == -1


@given(st.integers(0, U64_MAX))
def test_every_id_fits_a_signed_column_and_comes_back(msg_id: int) -> None:
    stored = to_db_id(msg_id)
    assert stored is None or LOWEST_DB_ID <= stored <= STORED_U64_MAX
    assert (stored is None) == (msg_id == 0)
    assert from_db_id(stored) == msg_id


@given(st.integers(1, U64_MAX), st.integers(1, U64_MAX))
def test_two_ids_never_share_a_stored_value(a: int, b: int) -> None:
    assert (to_db_id(a) == to_db_id(b)) == (a == b)
