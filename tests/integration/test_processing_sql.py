"""Processing state in SQL (SQLite and PostgreSQL), migration 0003, and the per-processor lock
across OS processes on PostgreSQL."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep.exceptions import ProcessorBusy
from freshkeep.ports import Lock, ProcessingStateStore
from freshkeep.processing import (
    Item,
    ItemState,
    Outcome,
    Pipeline,
    PostgresLocks,
    ProcessContext,
    Processor,
)
from freshkeep.processing.sql import PROCESSING_STATE_TABLE, SQLProcessingState
from freshkeep.sql import migrate as m
from freshkeep.testing.conformance import LockSuite, ProcessingStateStoreSuite
from tests.conftest import PgSchema
from tests.integration.processing_worker import run_processor
from tests.integration.test_migrations import HEAD

OLD_NS = 1_600_000_000 * 10**9
TIMEOUT = 120.0


class Count(Processor):
    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root, self.pattern = name, root, "*.txt"
        self.calls = 0

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        self.calls += 1
        if item.key == "bad.txt":
            raise ValueError("bad line 3")
        return Outcome({"bytes": item.size, "lines": 1})


def tree(root: Path, n: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = root / f"{i}.txt"
        path.write_text(f"item {i}\n")
        os.utime(path, ns=(OLD_NS, OLD_NS))


async def roundtrip(engine: AsyncEngine, root: Path) -> None:
    state = SQLProcessingState(engine)
    await state.create_table()
    tree(root, 1200)  # several batches
    (root / "bad.txt").write_text("x")
    os.utime(root / "bad.txt", ns=(OLD_NS, OLD_NS))
    one, other = Count("one", root), Count("other", root)
    pipeline = Pipeline(state, racy_window=0)
    pipeline.register(one)
    first = await pipeline.run("one")
    assert (first.processed, first.failed) == (1200, 1)

    # A fresh pipeline (a restart) trusts the stored state: nothing is read.
    again = Pipeline(SQLProcessingState(engine), racy_window=0)
    again.register(Count("one", root))
    second = await again.run("one")
    assert (second.scanned, second.skipped, second.hashed, second.deferred) == (1201, 1200, 0, 1)

    rows = await state.load("one")
    assert rows["0.txt"].counts == {"bytes": 7, "lines": 1}
    assert rows["0.txt"].processed_at is not None and rows["0.txt"].content_hash
    bad = rows["bad.txt"]
    assert bad.attempts == 1 and bad.last_error == "ValueError: bad line 3"
    assert bad.retry_at is not None and bad.processed_at is None

    pipeline.register(other)
    await pipeline.run("other")
    assert await state.load("one") == rows  # another processor's run leaves them alone

    await state.save([ItemState("one", "0.txt", 1, 2, "h", None, {}, "e", 3, 4.0)])
    assert (await state.load("one"))["0.txt"].attempts == 3
    await state.delete("one", ["0.txt", "missing"])
    assert "0.txt" not in await state.load("one")


async def test_sqlite_state_roundtrip(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    try:
        await roundtrip(engine, tmp_path / "files")
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_state_roundtrip(pg_schema: PgSchema, tmp_path: Path) -> None:
    engine = pg_schema.async_engine()
    try:
        await roundtrip(engine, tmp_path / "files")
    finally:
        await engine.dispose()


def test_migration_from_empty_and_from_the_previous_schema(tmp_path: Path) -> None:
    fresh = str(tmp_path / "fresh.db")
    assert m.upgrade(fresh).after == HEAD
    previous = str(tmp_path / "previous.db")
    assert m.upgrade(previous, "0002").after == "0002"
    step = m.upgrade(previous, "0003")
    assert step.before == "0002" and step.after == "0003"
    assert step.applied == (
        "0003: Create the freshkeep_processing_state table (per-(processor, "
        "item) processing state).",
    )
    assert not m.upgrade(previous, "0003").changed  # idempotent
    engine = create_engine(f"sqlite:///{previous}")
    try:
        columns = {c["name"] for c in inspect(engine).get_columns(PROCESSING_STATE_TABLE)}
        assert {"processed_at", "mtime_ns", "size", "content_hash", "counts"} <= columns
        assert {"last_error", "attempts", "retry_at"} <= columns
    finally:
        engine.dispose()
    assert m.downgrade(previous, "0002").after == "0002"
    engine = create_engine(f"sqlite:///{previous}")
    try:
        assert not inspect(engine).has_table(PROCESSING_STATE_TABLE)
    finally:
        engine.dispose()


async def test_migration_adopts_a_table_create_table_made(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        await SQLProcessingState(engine).create_table()
        await SQLProcessingState(engine).save([ItemState("p", "k", 1, 2)])
        assert (await m.upgrade_async(engine)).after == HEAD
        assert (await SQLProcessingState(engine).load("p"))["k"].size == 2
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_migration_from_the_previous_schema(pg_schema: PgSchema) -> None:
    engine = pg_schema.sync_engine()
    try:
        assert m.upgrade(engine, "0002").after == "0002"
        assert m.upgrade(engine).after == HEAD
        assert inspect(engine).has_table(PROCESSING_STATE_TABLE)
    finally:
        engine.dispose()


@pytest.mark.postgres
class TestPostgresLock(LockSuite):
    """Advisory locks: ``other`` is "another instance" with its own pool."""

    @pytest.fixture
    async def lock(self, pg_schema: PgSchema) -> AsyncIterator[Lock]:
        engine = pg_schema.async_engine()
        lk = PostgresLocks(engine)
        yield lk
        await lk.aclose()
        await engine.dispose()

    @pytest.fixture
    async def other(self, pg_schema: PgSchema) -> AsyncIterator[Lock]:
        engine = pg_schema.async_engine()
        lk = PostgresLocks(engine)
        yield lk
        await lk.aclose()
        await engine.dispose()


class TestSQLProcessingState(ProcessingStateStoreSuite):
    @pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
    async def processing_store(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[ProcessingStateStore]:
        if request.param == "sqlite":
            engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
        else:
            engine = request.getfixturevalue("pg_schema").async_engine()
        store = SQLProcessingState(engine)
        await store.create_table()
        yield store
        await engine.dispose()


@pytest.mark.postgres
async def test_two_os_processes_one_runs_the_other_is_busy(
    pg_schema: PgSchema, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    tree(root, 3)
    engine = pg_schema.async_engine()
    try:
        await SQLProcessingState(engine).create_table()
    finally:
        await engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    entered, hold, results = ctx.Event(), ctx.Event(), ctx.Queue()
    args = (pg_schema.async_url, pg_schema.name, str(root), entered, hold, results)
    first = ctx.Process(target=run_processor, args=args)
    second = ctx.Process(target=run_processor, args=args)
    procs = [first, second]
    try:
        first.start()
        assert await asyncio.to_thread(entered.wait, TIMEOUT)  # the first holds the lock
        second.start()
        assert await asyncio.to_thread(results.get, True, TIMEOUT) == "busy"
        hold.set()
        assert await asyncio.to_thread(results.get, True, TIMEOUT) == "ran"
    finally:
        hold.set()
        for p in procs:
            p.join(timeout=TIMEOUT)
            if p.is_alive():  # only on failure: never leave a child behind
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    results.close()
    results.join_thread()

    # The lock was released: this process can run it now.
    engine = pg_schema.async_engine()
    try:
        pipeline = Pipeline(SQLProcessingState(engine), locks=PostgresLocks(engine))
        pipeline.register(Count("slow", root))
        stats = await pipeline.run("slow")
        assert stats.scanned == 3 and stats.processed + stats.unchanged + stats.skipped == 3
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_killed_holder_does_not_block_forever(pg_schema: PgSchema, tmp_path: Path) -> None:
    root = tmp_path / "files"
    tree(root, 1)
    engine = pg_schema.async_engine()
    try:
        await SQLProcessingState(engine).create_table()
        ctx = multiprocessing.get_context("spawn")
        entered, hold, results = ctx.Event(), ctx.Event(), ctx.Queue()
        args = (pg_schema.async_url, pg_schema.name, str(root), entered, hold, results)
        holder = ctx.Process(target=run_processor, args=args)
        holder.start()
        try:
            assert await asyncio.to_thread(entered.wait, TIMEOUT)
        finally:
            holder.kill()  # a crash while holding the lock
            holder.join()
        results.close()
        results.join_thread()
        pipeline = Pipeline(SQLProcessingState(engine), locks=PostgresLocks(engine))
        pipeline.register(Count("slow", root))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:  # the server notices the closed connection and drops its lock
            try:
                stats = await pipeline.run("slow")
                break
            except ProcessorBusy:
                assert loop.time() < deadline, "the killed holder's lock was never released"
                await asyncio.sleep(0.05)
        assert stats.processed == 1
    finally:
        await engine.dispose()
