"""The docs' examples that need PostgreSQL or Redis, run as they are written, with the names
their text gives them: the guide's bump in a transaction and its instances sharing builds, the
processing scheduler with PostgreSQL locks, and the tracker example of remote-and-notify."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy.ext.asyncio
from fastapi import FastAPI
from sqlalchemy import Boolean, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep import BuildContext, Keeper
from freshkeep.integrations.sqlalchemy import track
from freshkeep.sql import SQLAlchemyRevisions
from tests.conftest import REDIS_URL, PgSchema
from tests.docs_blocks import python_block, run_block
from tests.integration.test_tracker_reconcile import FakeTracker


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int]
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)


ARCHIVE = """
CREATE FUNCTION archive_done_tasks(t integer) RETURNS integer AS $$
    WITH moved AS (
        UPDATE tasks SET archived = true WHERE topic_id = t AND done AND NOT archived
        RETURNING 1
    )
    SELECT count(*)::integer FROM moved
$$ LANGUAGE sql
"""


@pytest.fixture
async def engine(pg_schema: PgSchema) -> AsyncIterator[AsyncEngine]:
    engine: AsyncEngine = pg_schema.async_engine()
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_writing_function_is_bumped_by_hand(engine: AsyncEngine) -> None:
    """user-guide.md: a SELECT that calls a function which writes bumps nothing by itself;
    ``bump(s, Task)`` in the same transaction does."""
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(text(ARCHIVE))
    revisions = SQLAlchemyRevisions(engine)
    await revisions.create_table()
    keeper, Session = Keeper(revisions), async_sessionmaker(engine)
    track(keeper, Session, models=[Task])
    try:
        async with Session() as s:
            s.add_all([Task(id=1, topic_id=3, done=True), Task(id=2, topic_id=3)])
            await s.commit()
        assert await revisions.read(["table:tasks"]) == {"table:tasks": 1}
        async with Session() as s:  # unseen: a SELECT writes no table as far as the hooks know
            assert await s.scalar(text("SELECT archive_done_tasks(3)")) == 1
            await s.commit()
        assert await revisions.read(["table:tasks"]) == {"table:tasks": 1}
        async with Session() as s:
            await s.execute(text("UPDATE tasks SET archived = false"))
            await s.commit()
        assert keeper.tracker.current(["table:tasks"]) == (2,)
        names = {"Session": Session, "Task": Task}
        await run_block(python_block("user-guide.md", "bump-in-transaction"), names)
        assert await revisions.read(["table:tasks"]) == {"table:tasks": 3}
        assert keeper.tracker.current(["table:tasks"]) == (3,)  # applied before commit() returned
        async with Session() as s:
            assert list(await s.scalars(select(Task.id).where(Task.archived))) == [1]
    finally:
        await keeper.aclose()


async def test_instances_share_builds_and_revisions(
    engine: AsyncEngine, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """user-guide.md, "Sharing builds between instances": two instances built by the block;
    a bump in one reaches the other over the Redis bus, not by its resync."""
    prefix = redis_client.freshkeep_prefix
    monkeypatch.setenv("FRESHKEEP_STORE_URL", REDIS_URL)
    monkeypatch.setenv("FRESHKEEP_BUS_URL", REDIS_URL)
    monkeypatch.setenv("FRESHKEEP_STORE_PREFIX", prefix)
    monkeypatch.setenv("FRESHKEEP_BUS_CHANNEL", prefix + "bus")
    monkeypatch.setenv("FRESHKEEP_PROBE", "interval")
    monkeypatch.setenv("FRESHKEEP_RESYNC_INTERVAL", "3600")  # only the bus can tell them
    await SQLAlchemyRevisions(engine).create_table()
    block = python_block("user-guide.md", "sharing-builds")
    names = {"Keeper": Keeper, "SQLAlchemyRevisions": SQLAlchemyRevisions}
    names |= {"engine": engine, "FastAPI": FastAPI}
    a, b = await run_block(block, names), await run_block(block, names)
    builds: list[str] = []

    def view(keeper: Keeper, instance: str) -> Any:
        async def build(ctx: BuildContext) -> dict[str, Any]:
            builds.append(instance)
            return {"prices": ctx.revisions["tag:pricing"]}

        keeper.declare("tag:pricing")  # a tag: the application bumps it
        return keeper.view("prices", build, sources=["tag:pricing"])

    on_a, on_b = view(a["keeper"], "a"), view(b["keeper"], "b")
    async with a["lifespan"](a["app"]), b["lifespan"](b["app"]):
        assert a["keeper"].snapshot().bus.kind == b["keeper"].snapshot().bus.kind == "redis"
        assert (await on_a.get()).value == {"prices": 0}
        assert (await on_b.get()).value == {"prices": 0}  # a's build, from the shared store
        assert builds == ["a"]
        assert await redis_client.keys(prefix + "*")
        await a["keeper"].bump("tag:pricing")
        deadline = time.monotonic() + 5
        while b["keeper"].tracker.current(["tag:pricing"]) != (1,):
            assert time.monotonic() < deadline, "the bump did not reach b over the bus"
            await asyncio.sleep(0.02)
        assert (await on_b.get()).value == {"prices": 1}


async def test_the_scheduler_runs_a_processor_under_a_postgres_lock(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sessions" / "ana").mkdir(parents=True)
    (tmp_path / "sessions" / "ana" / "one.jsonl").write_text("{}\n{}\n")
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / "sessions" / "ana" / "one.jsonl", (an_hour_ago, an_hour_ago))
    pipeline = (await run_block(python_block("processing.md", "processor"), {}))["pipeline"]
    names = {"engine": engine, "pipeline": pipeline}
    found = await run_block(python_block("processing.md", "scheduler"), names)
    scheduler = found["scheduler"]
    job = scheduler.jobs["lines"]
    try:
        job.next_due = scheduler.clock.monotonic()  # due now, not after its jitter (< 5 s)
        deadline = time.monotonic() + 5
        while job.runs < 1:
            assert time.monotonic() < deadline, "the scheduler did not run the job"
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
        await scheduler.locks.aclose()
    assert (job.failures, job.skips["locked"]) == (0, 0)
    assert pipeline.last_stats["lines"].scanned == 1


class Chat:
    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def post(self, to: str, message: str) -> None:
        self.posts.append((to, message))


async def test_the_tracker_example_notifies_once_per_change_across_a_deploy(
    pg_schema: PgSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remote-and-notify.md: the block's tracker is faked, its database is the test's schema;
    ``main()`` is the loop around what the test calls."""
    tracker, chat = FakeTracker(), Chat()
    engines: list[AsyncEngine] = [pg_schema.async_engine(), pg_schema.async_engine()]
    unused = list(engines)

    def create_async_engine(url: str) -> AsyncEngine:
        assert url == "postgresql+asyncpg://app@db/app"
        return unused.pop()

    transport = httpx.MockTransport(tracker.handle)
    monkeypatch.setattr(
        httpx, "AsyncClient", functools.partial(httpx.AsyncClient, transport=transport)
    )
    monkeypatch.setattr(sqlalchemy.ext.asyncio, "create_async_engine", create_async_engine)
    block = python_block("remote-and-notify.md", "tracker-example")
    started: list[dict[str, Any]] = []

    async def start() -> dict[str, Any]:
        found = await run_block(block, {"chat": chat})
        started.append(found)
        await found["store"].create_table()
        await found["unblocked"].preload()
        return found

    try:
        first = await start()
        for _ in range(3):
            await first["reconcile"]("proj-1")  # first sight: a baseline, then unchanged
        tracker.tasks["T-1"]["blocked_by"] = []
        await first["reconcile"]("proj-1")  # seen once: confirm=2 waits for a second tick
        assert chat.posts == []
        for _ in range(3):
            await first["reconcile"]("proj-1")
        assert chat.posts == [("ana", "T-1 is unblocked: a")]
        stats = first["unblocked"].stats
        assert stats.skipped == 7  # T-2 is done: never notified
        assert tracker.state_requests == 1  # the states are a remote value (ttl=600)
        second = await start()  # a deploy: the confirmed states are in the database
        for _ in range(3):
            await second["reconcile"]("proj-1")
        assert chat.posts == [("ana", "T-1 is unblocked: a")]
    finally:
        for found in started:
            await found["tracker"].aclose()
            await found["keeper"].aclose()
        for engine in engines:
            await engine.dispose()
