"""The record of processor runs started by hand in ``freshkeep_processing_runs`` (SQLite and
PostgreSQL), migration ``0006``, and the hub's two ways in: its admin route and
``freshkeep process``, both listed by ``freshkeep process --history`` and the admin route."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner

from freshkeep import cli
from freshkeep.demo import hub_app
from freshkeep.demo.settings import HubSettings
from freshkeep.processing import RunHistory, RunRecord
from freshkeep.processing.sql import PROCESSING_RUNS_TABLE, SQLRunHistory
from freshkeep.sql import migrate as m
from freshkeep.testing import FakeClock
from tests.conftest import PgSchema

TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


async def invoke(*args: str) -> Result:
    """The CLI, from a thread: it runs its own event loop."""
    return await asyncio.to_thread(runner.invoke, cli.app, list(args), env=WIDE)


def record(processor: str, who: str, at: float, **counts: int) -> RunRecord:
    return RunRecord("pipeline", processor, who, "cli", None, "ok", at, at + 1.5, **counts)


@pytest.fixture(
    params=["sqlite", "sqlite-sync", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLRunHistory]:
    clock = FakeClock()
    engine: AsyncEngine | Engine
    if request.param == "sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    elif request.param == "sqlite-sync":
        engine = create_engine(f"sqlite:///{tmp_path / 'h.db'}")
    else:
        engine = request.getfixturevalue("pg_schema").async_engine()
    store = SQLRunHistory(engine, keep=3600, clock=clock)
    await store.create_table()
    yield store
    if isinstance(engine, AsyncEngine):
        await engine.dispose()
    else:
        engine.dispose()


async def test_records_listed_newest_first_and_dropped_after_keep(history: RunHistory) -> None:
    t0 = 1_700_000_000.0
    first = await history.record(record("usage", "ann", t0, processed=3, failed=1, skipped=2))
    assert first.id is not None
    await history.record(record("evidence", "bob", t0 + 10))
    await history.record(record("usage", "cid", t0 + 20, deferred=4, unchanged=5))
    rows = await history.recent()
    assert [(r.processor, r.who) for r in rows] == [
        ("usage", "cid"),
        ("evidence", "bob"),
        ("usage", "ann"),
    ]
    oldest = rows[-1]
    assert (oldest.processed, oldest.failed, oldest.skipped, oldest.id) == (3, 1, 2, first.id)
    assert (oldest.started_at, oldest.finished_at, oldest.duration) == (t0, t0 + 1.5, 1.5)
    assert (rows[0].deferred, rows[0].unchanged, rows[0].operator) == (4, 5, None)
    assert [r.who for r in await history.recent("usage")] == ["cid", "ann"]
    assert [r.who for r in await history.recent(limit=1)] == ["cid"]

    # A write 3600 s after the first two ended drops them (on write: no GC needed).
    await history.record(record("usage", "dan", t0 + 3612))
    assert [r.who for r in await history.recent()] == ["dan", "cid"]
    assert await history.prune(t0 + 3700) == 1
    assert [r.who for r in await history.recent()] == ["dan"]


def test_migration_0006_from_the_previous_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "m.db")
    assert m.upgrade(path, "0005").after == "0005"
    step = m.upgrade(path)
    assert step.applied == (
        "0006: Create the freshkeep_processing_runs table (the record of processor runs "
        "started by hand).",
    )
    engine = create_engine(f"sqlite:///{path}")
    try:
        insp = inspect(engine)
        columns = {c["name"] for c in insp.get_columns(PROCESSING_RUNS_TABLE)}
        assert {"processor", "principal", "operator", "via", "outcome", "started_at"} <= columns
        assert {"processed", "failed", "skipped", "unchanged", "deferred", "error"} <= columns
    finally:
        engine.dispose()
    assert m.downgrade(path, "0005").after == "0005"
    engine = create_engine(f"sqlite:///{path}")
    try:
        assert not inspect(engine).has_table(PROCESSING_RUNS_TABLE)
    finally:
        engine.dispose()


async def test_hub_admin_runs_and_cli_runs_are_recorded(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "a.jsonl").write_text('{"type": "tool_use"}\n')
    db = str(tmp_path / "hub.db")
    settings = HubSettings(
        sessions_root=str(root), admin_token=SecretStr(TOKEN), processing_interval=0
    )
    async with hub_app(db, seed_tasks=0, settings=settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            r = await http.post(
                "/admin/processors/usage/run", headers=AUTH | {"X-Freshkeep-Operator": "ann"}
            )
            assert r.status_code == 200 and r.json()["processed"] == 1
            assert (await http.get("/admin/processors/history")).status_code == 401
            body = (await http.get("/admin/processors/history", headers=AUTH)).json()
    (run,) = body["runs"]
    assert (run["processor"], run["who"], run["principal"], run["via"]) == (
        "usage",
        "ann",
        "admin",
        "http",
    )
    assert (run["outcome"], run["processed"], run["failed"]) == ("ok", 1, 0)

    args = ["--db", db, "--root", str(root)]
    ran = await invoke("process", "evidence", *args, "--operator", "bob")
    assert ran.exit_code == 0, ran.output
    listed = await invoke("process", "--history", "--db", db, "--json")
    assert listed.exit_code == 0, listed.output
    runs = json.loads(listed.output)
    assert [(x["processor"], x["who"], x["via"]) for x in runs] == [
        ("evidence", "bob", "cli"),
        ("usage", "ann", "http"),
    ]
    assert "@" in runs[0]["principal"]  # user@host of the shell
    table = await invoke("process", "usage", "--history", "--db", db)
    assert table.exit_code == 0, table.output
    assert "ann (admin)" in table.output and "bob" not in table.output
    none = await invoke("process", "nope", "--history", "--db", db)
    assert none.exit_code == 0 and "no recorded run of processor 'nope'" in none.output
    missing = await invoke("process", "--history", "--db", str(tmp_path / "none.db"))
    assert missing.exit_code == 2
    assert not (tmp_path / "none.db").exists()


@pytest.mark.postgres
async def test_postgres_migration_creates_the_table(pg_schema: PgSchema) -> None:
    engine = pg_schema.sync_engine()
    try:
        assert m.upgrade(engine, "0005").after == "0005"
        assert m.upgrade(engine).changed
        assert inspect(engine).has_table(PROCESSING_RUNS_TABLE)
    finally:
        engine.dispose()
