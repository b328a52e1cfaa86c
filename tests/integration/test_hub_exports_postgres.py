"""The hub's topic exports on PostgreSQL, with each job backend: the embedded runner (a table in
the hub's database) and procrastinate. A write and its prebuild job commit together; the job's
worker builds the export, so the next read is a hit; a rolled-back write defers nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep.demo import get_hub, hub_app
from freshkeep.demo.exports import export_revision
from freshkeep.demo.hub import Hub
from freshkeep.demo.models import Decision
from freshkeep.settings import Settings

pytestmark = pytest.mark.postgres
JSON = {"accept": "application/json"}


@pytest.fixture(params=["sql", "procrastinate"])
async def client(
    request: pytest.FixtureRequest, procrastinate_database: str, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Hub]]:
    settings = Settings(
        jobs_backend=request.param,
        jobs_poll_interval=0.05,
        artifact_storage_url=str(tmp_path / "artifacts"),
    )
    # Every test starts from no export state and no job. Emptied before the hub starts: a
    # TRUNCATE next to a running procrastinate worker can deadlock with its job fetching.
    engine = create_async_engine(procrastinate_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE procrastinate_jobs CASCADE"))
            for table in ("freshkeep_artifacts", "topic_export_revisions", "freshkeep_jobs"):
                await conn.execute(
                    text(
                        f"DO $$ BEGIN DELETE FROM {table}; "
                        "EXCEPTION WHEN undefined_table THEN NULL; END $$"
                    )
                )
    finally:
        await engine.dispose()
    async with hub_app(procrastinate_database, seed_tasks=100, settings=settings) as app:
        hub = get_hub(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            yield http, hub


async def _jobs(hub: Hub) -> int:
    """Prebuild jobs in the queue's table, whatever their status."""
    task = hub.exports.cache.prebuild_task
    async with hub.engine.connect() as conn:
        if hub.keeper.settings.jobs_backend == "sql":
            q = text("SELECT count(*) FROM freshkeep_jobs WHERE task = :t")
        else:
            q = text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = :t")
        return int(await conn.scalar(q, {"t": task}) or 0)


async def test_a_write_and_its_prebuild_commit_together(
    client: tuple[httpx.AsyncClient, Hub],
) -> None:
    http, hub = client
    r = await http.get("/topics/3/export", headers=JSON)
    assert r.status_code == 200 and r.headers["x-freshkeep-cache"] == "miss", r.text

    r = await http.post("/decisions", json={"topic_id": 3, "title": "Adopt the queue"})
    assert r.status_code == 201, r.text
    assert await _jobs(hub) == 1
    await hub.exports.queue.drain()
    built = hub.exports.cache.stats.built
    assert built == 2  # the read's miss, then the job's prebuild

    r = await http.get("/topics/3/export", headers=JSON)
    assert r.headers["x-freshkeep-cache"] == "hit" and r.json()["key"] == "3@1", r.text
    assert hub.exports.cache.stats.built == built

    async with hub.sessionmaker() as s:  # a rolled-back write defers nothing
        s.add(Decision(topic_id=4, title="never"))
        await hub.exports.before_commit(s)
        await s.rollback()
    async with hub.sessionmaker() as s:
        assert await export_revision(s, 4) == 0
        assert (
            await s.scalar(
                select(func.count()).select_from(Decision).where(Decision.title == "never")
            )
            == 0
        )
    assert await _jobs(hub) == 1


async def test_waiting_prebuild_jobs_are_counted(client: tuple[httpx.AsyncClient, Hub]) -> None:
    http, hub = client
    task = hub.exports.cache.prebuild_task
    await hub.exports.stop()  # no worker: the write's job waits
    try:
        r = await http.post("/decisions", json={"topic_id": 5, "title": "Later"})
        assert r.status_code == 201, r.text
        assert await hub.exports.queue.waiting(task) == 1
        assert (await hub.exports.cache.health_data()).prebuild_backlog == 1
    finally:
        await hub.exports.queue.start()
    await hub.exports.queue.drain()
    assert await hub.exports.queue.waiting(task) == 0
