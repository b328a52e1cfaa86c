"""Which tables a raw SQL statement writes (freshkeep.sql.statements)."""

from __future__ import annotations

import logging

import pytest

from freshkeep.sql.statements import UNKNOWN, first_keyword, written_tables

CASES = [
    ("UPDATE orders SET x = 1 WHERE id = 2", "sqlite", ("orders",)),
    ("update orders set x = 1", "postgresql", ("orders",)),
    ("INSERT INTO t (a) VALUES (1)", "sqlite", ("t",)),
    ("INSERT INTO t DEFAULT VALUES", "postgresql", ("t",)),
    ("INSERT INTO t SELECT * FROM u", "sqlite", ("t",)),
    ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", "postgresql", ("t",)),
    ("INSERT INTO t (a) VALUES (1) ON CONFLICT DO NOTHING", "sqlite", ("t",)),
    ("INSERT OR REPLACE INTO t VALUES (1)", "sqlite", ("t",)),
    ("REPLACE INTO t VALUES (1)", "sqlite", ("t",)),
    ("DELETE FROM t WHERE a = 1", "sqlite", ("t",)),
    ("DELETE FROM main.t", "sqlite", ("main.t",)),
    ("TRUNCATE a, b", "postgresql", ("a", "b")),
    ("TRUNCATE TABLE ONLY public.t RESTART IDENTITY", "postgresql", ("public.t",)),
    ("UPDATE public.orders AS o SET x = 1", "postgresql", ("public.orders",)),
    ("UPDATE t SET a = 1 FROM u WHERE t.id = u.id", "postgresql", ("t",)),
    ('INSERT INTO "Quoted Name" VALUES (1)', "postgresql", ("Quoted Name",)),
    (
        "WITH d AS (DELETE FROM x RETURNING *) INSERT INTO y SELECT * FROM d",
        "postgresql",
        ("y", "x"),
    ),
    (
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1 "
        "WHEN NOT MATCHED THEN INSERT (a) VALUES (1)",
        "postgresql",
        ("t",),
    ),
    ("DELETE FROM t; UPDATE u SET a = 1", "sqlite", ("t", "u")),
    ("DROP TABLE t", "sqlite", ("t",)),
    ("DROP TABLE a, b", "postgresql", ("a", "b")),
    ("SELECT 1; DELETE FROM tasks", "postgresql", ("tasks",)),
    ("SET LOCAL x = 1; UPDATE tasks SET a = 1", "postgresql", ("tasks",)),
    ("EXPLAIN ANALYZE DELETE FROM t", "postgresql", UNKNOWN),
    ("EXPLAIN SELECT 1", "postgresql", ()),
    ("UPDATE TASKS SET a = 1", "sqlite", ("tasks",)),
    ('UPDATE "Tasks" SET a = 1', "postgresql", ("Tasks",)),
    ("UPDATE Public.Orders SET a = 1", "postgresql", ("public.orders",)),
    ("COPY t (a, b) FROM STDIN", "postgresql", ("t",)),
    ("COPY t TO STDOUT", "postgresql", ()),
    ("SELECT * FROM t", "sqlite", ()),
    ("  -- a comment\n/* another */ select 1", "sqlite", ()),
    ("(SELECT 1)", "postgresql", ()),
    ("WITH a AS (SELECT 1) SELECT * FROM a", "sqlite", ()),
    ("BEGIN IMMEDIATE", "sqlite", ()),
    ("SAVEPOINT sa_1", "postgresql", ()),
    ("PRAGMA data_version", "sqlite", ()),
    ("CREATE TABLE z (a int)", "sqlite", ()),
    ("", "sqlite", ()),
    ("CALL refresh_all()", "postgresql", UNKNOWN),
    ("DO $$ BEGIN UPDATE t SET a = 1; END $$", "postgresql", UNKNOWN),
    ("EXECUTE stmt", "postgresql", UNKNOWN),
    ("UPDATE", "sqlite", UNKNOWN),
]


@pytest.mark.parametrize(("sql", "dialect", "expected"), CASES)
def test_written_tables(sql: str, dialect: str, expected: tuple[str, ...] | None) -> None:
    assert written_tables(sql, dialect) == expected


def test_first_keyword_skips_comments_and_parentheses() -> None:
    assert first_keyword("/* x */ -- y\n ( (select 1))") == "SELECT"
    assert first_keyword("   ") == ""


def test_a_statement_the_parser_cannot_read_fully_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A trigger's body (``;`` inside ``BEGIN … END``) is parsed as several statements; the
    parser's fallback warning is not printed on every start of an application."""
    sql = (
        'CREATE TRIGGER "t_bump" AFTER INSERT ON "t" FOR EACH ROW\n'
        "BEGIN\n    INSERT INTO counters (name) VALUES ('t');\nEND"
    )
    with caplog.at_level(logging.DEBUG, logger="sqlglot"):
        written_tables(sql, "sqlite")
    assert not [r for r in caplog.records if r.name.startswith("sqlglot")]
    with caplog.at_level(logging.WARNING, logger="sqlglot"):
        logging.getLogger("sqlglot").warning("outside freshkeep")
    assert [r.getMessage() for r in caplog.records] == ["outside freshkeep"]
