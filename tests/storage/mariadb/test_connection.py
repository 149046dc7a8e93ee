"""The writer's pipelined connection behaves like one that runs every statement inline."""

from __future__ import annotations

from collections.abc import Iterator

import mariadb
import pytest

from appliance.storage.mariadb.connection import MariaConnection, open_raw
from tests.support.mariadb import MariaDBServer


@pytest.fixture
def conn(mariadb: MariaDBServer) -> Iterator[MariaConnection]:
    location = mariadb.database("pipe")
    setup = MariaConnection(location, 10.0)
    setup.execute("CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT NOT NULL)")
    setup.close()
    connection = MariaConnection(location, 10.0, autocommit=False, pipelined=True)
    yield connection
    connection.close()


def committed(conn: MariaConnection) -> list[tuple[int, int]]:
    raw = open_raw(conn.location, 10)
    try:
        cur = raw.cursor()
        cur.execute("SELECT k, v FROM t ORDER BY k")
        return [tuple(row) for row in cur.fetchall()]
    finally:
        raw.close()


def test_queued_statements_run_in_order_and_commit_together(conn: MariaConnection) -> None:
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 10), (2, 20), (3, 30)])
    conn.executemany("DELETE FROM t WHERE k = ?", [(2,), (3,)])
    conn.executemany("UPDATE t SET v = ? WHERE k = ?", [(11, 1), (12, 1)])
    # A read waits for what was queued before it.
    assert [tuple(r) for r in conn.execute("SELECT k, v FROM t").fetchall()] == [(1, 12)]
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(4, 40), (5, 50)])
    assert committed(conn) == []  # nothing is visible before COMMIT
    conn.commit()
    assert committed(conn) == [(1, 12), (4, 40), (5, 50)]


def test_a_failed_queued_statement_fails_the_transaction_and_skips_the_rest(
        conn: MariaConnection) -> None:
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 10), (2, 20)])
    conn.commit()
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(3, 30), (4, 40)])
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 99), (5, 50)])  # duplicate key
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(6, 60), (7, 70)])  # must not run
    with pytest.raises(mariadb.IntegrityError):
        conn.commit()
    conn.rollback()
    assert committed(conn) == [(1, 10), (2, 20)]
    # The connection carries on with the next transaction.
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(8, 80), (9, 90)])
    conn.commit()
    assert committed(conn) == [(1, 10), (2, 20), (8, 80), (9, 90)]


def test_a_failure_surfaces_at_the_next_read_too(conn: MariaConnection) -> None:
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 10), (1, 11)])
    with pytest.raises(mariadb.IntegrityError):
        conn.execute("SELECT COUNT(*) FROM t")
    conn.rollback()
    assert committed(conn) == []


def test_rollback_discards_queued_statements(conn: MariaConnection) -> None:
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 10), (2, 20)])
    conn.rollback()
    conn.commit()
    assert committed(conn) == []
