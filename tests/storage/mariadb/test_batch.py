"""Many rows as one statement (appliance.storage.mariadb.batch): text and effect."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance.storage.mariadb import batch
from appliance.storage.mariadb.batch import literal, rewrite
from appliance.storage.mariadb.connection import open_raw
from tests.support.mariadb import MariaDBServer


def test_literals_carry_nothing_but_the_value() -> None:
    assert literal(42) == "42"
    assert literal(-(2**63)) == "-9223372036854775808"
    assert literal(True) == "1"
    assert literal(None) == "NULL"
    assert literal(b"") == "X''"
    assert literal(b"a'; DROP TABLE x; --") == "X'" + b"a'; DROP TABLE x; --".hex() + "'"
    assert literal("é'") == "_utf8mb4 X'" + "é'".encode().hex() + "'"
    with pytest.raises(TypeError):
        literal(1.5)


def test_insert_becomes_one_multi_row_statement() -> None:
    assert rewrite("INSERT IGNORE INTO t VALUES (?, ?)", [(1, b"a"), (2, None)]) == [
        "INSERT IGNORE INTO t VALUES (1,X'61'),(2,NULL)"]
    assert rewrite("INSERT INTO t (a, b) VALUES (?,?)", [(1, 2)]) == [
        "INSERT INTO t (a, b) VALUES (1,2)"]


def test_long_batches_are_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "MAX_STATEMENT_CHARS", 20)
    out = rewrite("DELETE FROM t WHERE k = ?", [(i,) for i in range(1000, 1012)])
    assert out is not None
    assert len(out) > 1
    assert ",".join(s.removeprefix("DELETE FROM t WHERE k IN (").removesuffix(")")
                    for s in out) == ",".join(str(i) for i in range(1000, 1012))


def test_delete_by_one_or_more_columns() -> None:
    assert rewrite("DELETE FROM d WHERE a = ?", [(1,), (2,)]) == [
        "DELETE FROM d WHERE a IN (1,2)"]
    assert rewrite("DELETE FROM d WHERE a = ? AND b = ?", [(1, 2), (3, 4)]) == [
        "DELETE FROM d WHERE (a,b) IN ((1,2),(3,4))"]


def test_update_same_value_or_case_and_the_last_value_wins() -> None:
    assert rewrite("UPDATE m SET s = ? WHERE k = ?", [(2, 10), (2, 11)]) == [
        "UPDATE m SET s = 2 WHERE k IN (10,11)"]
    assert rewrite("UPDATE m SET s = ? WHERE k = ?", [(2, 10), (3, 11), (4, 10)]) == [
        "UPDATE m SET s = CASE k WHEN 10 THEN 4 WHEN 11 THEN 3 END WHERE k IN (10,11)"]
    # An expression of the row itself: a key given twice is updated twice, in order.
    assert rewrite("UPDATE d SET c = GREATEST(c, ?) WHERE id = ?", [(5, 1), (7, 2), (9, 1)]) \
        == ["UPDATE d SET c = GREATEST(c, CASE id WHEN 1 THEN 5 WHEN 2 THEN 7 END)"
            " WHERE id IN (1,2)", "UPDATE d SET c = GREATEST(c, 9) WHERE id IN (1)"]


@pytest.mark.parametrize("sql", [
    "SELECT a FROM t WHERE k = ?",
    "DELETE FROM t WHERE k = ? AND s <= (SELECT min(c) FROM d WHERE u = ?)",
    "DELETE FROM t WHERE k IN (SELECT id FROM d WHERE u = ?)",
    "UPDATE t SET a = ?, b = ? WHERE k = ?",
    "INSERT INTO t SELECT ?, a FROM d",
    "UPDATE t SET a = 'x?' WHERE k = ?",
    "UPDATE t SET a = (SELECT max(b) FROM d WHERE c = ?) WHERE k = ?",
])
def test_other_statements_are_left_to_the_driver(sql: str) -> None:
    assert rewrite(sql, [tuple(range(sql.count("?")))]) is None


def test_a_value_that_is_no_literal_leaves_it_to_the_driver() -> None:
    assert rewrite("INSERT INTO t VALUES (?)", [(1,), (2.5,)]) is None


def test_same_effect_as_the_drivers_executemany(mariadb: MariaDBServer) -> None:
    location = mariadb.database("batch")
    conn = open_raw(location, 10)
    rng = random.Random(5)
    try:
        cur = conn.cursor()

        def table(name: str) -> list[tuple[Any, ...]]:
            cur.execute(f"SELECT * FROM {name} ORDER BY a, b")
            return [tuple(bytes(v) if isinstance(v, bytearray) else v for v in r)
                    for r in cur.fetchall()]

        for name in ("by_driver", "rewritten"):
            cur.execute(f"CREATE TABLE {name} (a BIGINT, b BIGINT, c BIGINT NOT NULL,"
                        " p BLOB, s VARCHAR(20) CHARACTER SET utf8mb4, PRIMARY KEY (a, b))")
        rows = [(rng.randrange(50), rng.randrange(5), rng.randrange(2**62),
                 rng.randbytes(rng.randrange(30)) or None, rng.choice(["", "é", "x'y"]))
                for _ in range(300)]
        steps: list[tuple[str, list[tuple[Any, ...]]]] = [
            ("INSERT IGNORE INTO {t} VALUES (?, ?, ?, ?, ?)", rows),
            ("DELETE FROM {t} WHERE a = ? AND b = ?", [r[:2] for r in rows[::3]]),
            ("UPDATE {t} SET c = GREATEST(c, ?) WHERE a = ?",
             [(rng.randrange(2**63), rng.randrange(50)) for _ in range(80)]),
            ("UPDATE {t} SET s = ? WHERE b = ?", [("z", 1), ("w", 1), ("v", 2)]),
            ("DELETE FROM {t} WHERE a = ?", [(i,) for i in range(0, 50, 7)]),
        ]
        for sql, params in steps:
            cur.executemany(sql.format(t="by_driver"), params)
            statements = rewrite(sql.format(t="rewritten"), params)
            assert statements is not None, sql
            for statement in statements:
                cur.execute(statement)
            assert table("rewritten") == table("by_driver"), sql
        assert len(table("rewritten")) > 50
    finally:
        conn.close()
