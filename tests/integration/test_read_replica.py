"""Views built on a real PostgreSQL streaming replica (started by the test, replay paused and
resumed by it): no value is ever labelled with revisions newer than the data it holds, a
causal token newer than the replica waits and then builds on the primary, and the view
catches up once replay resumes.

Every write sets ``items.n`` to the revision of ``table:items`` it commits (the counter and
the row in one transaction), so a value is labelled exactly right when its label equals the
``n`` it holds, and newer than its data when the label is greater.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep import Keeper, Policy, Settings
from freshkeep.core.entry import Read
from freshkeep.sql import ReadReplica, SQLAlchemyRevisions, bump_counters
from freshkeep.views import BuildContext, View
from tests.integration.pg_replica import Pair, streaming_pair

SOURCE = "table:items"


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with streaming_pair() as started:
        yield started


class Cluster:
    def __init__(self, primary: AsyncEngine, replica: AsyncEngine) -> None:
        self.primary = primary
        self.replica = replica
        self.written = 0

    async def write(self) -> int:
        """One write: the row and its counter in one transaction; returns the revision."""
        async with self.primary.begin() as conn:
            revs = await conn.run_sync(lambda c: bump_counters(c, [SOURCE]))
            rev = int(revs[SOURCE])
            await conn.execute(text("UPDATE items SET n = :n WHERE id = 1"), {"n": rev})
        self.written = rev
        return rev

    async def on_replica(self) -> tuple[int, int]:
        """``(counter, n)`` on the replica now."""
        async with self.replica.connect() as conn:
            counter = await conn.scalar(
                text("SELECT max(revision) FROM freshkeep_revisions WHERE source = :s"),
                {"s": SOURCE},
            )
            n = await conn.scalar(text("SELECT n FROM items WHERE id = 1"))
        return int(counter or 0), int(n)

    async def caught_up(self) -> None:
        """Wait (bounded) until the replica has replayed everything the primary wrote."""
        async with self.primary.connect() as conn:
            lsn = await conn.scalar(text("SELECT pg_current_wal_lsn()::text"))
        async with self.replica.connect() as conn:
            for _ in range(3000):
                lag = await conn.scalar(
                    text(
                        "SELECT pg_wal_lsn_diff(CAST(CAST(:lsn AS text) AS pg_lsn),"
                        " pg_last_wal_replay_lsn())"
                    ),
                    {"lsn": lsn},
                )
                if lag <= 0:
                    return
                await asyncio.sleep(0.01)
        raise AssertionError("the replica never caught up")

    async def pause(self) -> None:
        async with self.replica.connect() as conn:
            await conn.execute(text("SELECT pg_wal_replay_pause()"))
            for _ in range(3000):
                state = await conn.scalar(text("SELECT pg_get_wal_replay_pause_state()"))
                if state == "paused":
                    return
                await asyncio.sleep(0.01)
        raise AssertionError("replay never paused")

    async def resume(self) -> None:
        async with self.replica.connect() as conn:
            await conn.execute(text("SELECT pg_wal_replay_resume()"))


@pytest.fixture
async def cluster(pair: Pair) -> AsyncIterator[Cluster]:
    primary = create_async_engine(pair.primary_url)
    replica = create_async_engine(pair.replica_url)
    async with primary.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS items"))
        await conn.execute(text("DROP TABLE IF EXISTS freshkeep_revisions"))
        await conn.execute(text("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)"))
        await conn.execute(text("INSERT INTO items VALUES (1, 0)"))
    await SQLAlchemyRevisions(primary).create_table()
    c = Cluster(primary, replica)
    await c.caught_up()
    try:
        yield c
    finally:
        await c.resume()
        await primary.dispose()
        await replica.dispose()


async def build(ctx: BuildContext) -> dict[str, Any]:
    assert ctx.session is not None
    n = await ctx.session.scalar(text("SELECT n FROM items WHERE id = 1"))
    return {"n": n}


def labelled(read: Read) -> tuple[int, int]:
    """``(label, n)`` of a served value."""
    return int(read.entry.vector[SOURCE]), int(orjson.loads(read.body)["n"])


async def keeper_on(
    cluster: Cluster, *, wait: float, probe: str = "interval", policy: Policy | None = None
) -> tuple[Keeper, View]:
    keeper = Keeper(
        SQLAlchemyRevisions(cluster.primary),
        settings=Settings(replica_wait=wait),
        probe=probe,  # type: ignore[arg-type]
        resync_interval=0.05,
        policy=policy,
    )
    await keeper.start()
    view = keeper.view("items", build, sources=[SOURCE], replica=cluster.replica)
    return keeper, view


async def test_builds_on_the_replica_with_the_revisions_of_its_snapshot(cluster: Cluster) -> None:
    await cluster.write()
    await cluster.caught_up()
    keeper, view = await keeper_on(cluster, wait=0.2)
    try:
        read = await view.get()
        assert read.status == "miss"
        assert labelled(read) == (1, 1)
        snap = view.snapshot().replica
        assert snap is not None
        assert (snap.on_replica, snap.on_primary, snap.waited) == (1, 0, 0)
        assert snap.replica.startswith("postgresql+asyncpg://postgres:***@127.0.0.1")
        assert (await view.get()).status == "hit"
    finally:
        await keeper.aclose()


async def test_a_paused_replica_never_labels_a_value_newer_than_its_data(
    cluster: Cluster,
) -> None:
    """Writes stream while replay is paused and resumed; readers who learn revisions from the
    primary (every 50 ms) read all along. Each served value is checked against its label."""
    await cluster.write()
    await cluster.caught_up()
    keeper, view = await keeper_on(cluster, wait=0.05, policy=Policy.swr(max_stale=60))
    served: list[tuple[str, int, int]] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            read = await view.get()
            served.append((read.status, *labelled(read)))
            await asyncio.sleep(0.002)

    try:
        await view.get()
        readers = [asyncio.create_task(reader()) for _ in range(4)]
        for _phase in range(3):
            await cluster.pause()
            paused_at = (await cluster.on_replica())[0]
            for _ in range(15):
                await cluster.write()
                await asyncio.sleep(0.01)
            # The control: the replica's data is behind what the primary's counters say, so a
            # build labelled with the primary's revisions and reading the replica would be
            # labelled newer than its data.
            assert (await cluster.on_replica())[1] == paused_at < cluster.written
            await cluster.resume()
            for _ in range(15):
                await cluster.write()
                await asyncio.sleep(0.01)
        await cluster.caught_up()
        done.set()
        await asyncio.gather(*readers)
        await view.wait_idle()
        newer = [s for s in served if s[1] > s[2]]
        assert newer == []
        assert all(label == n for _, label, n in served)
        snap = view.snapshot().replica
        assert snap is not None and snap.on_replica > 0
        assert len({n for _, _, n in served}) > 3  # the readers saw the data move
        # Once replay has caught up, the view does too.
        read = await view.get(refresh=True)
        assert labelled(read) == (cluster.written, cluster.written)
    finally:
        done.set()
        await keeper.aclose()


async def test_a_causal_token_newer_than_the_replica_waits_then_builds_on_the_primary(
    cluster: Cluster,
) -> None:
    await cluster.write()
    await cluster.caught_up()
    keeper, view = await keeper_on(cluster, wait=0.3)
    try:
        assert labelled(await view.get()) == (1, 1)
        await cluster.pause()
        token = {SOURCE: await cluster.write()}
        read = await view.get(min_revision=token)
        assert labelled(read) == (2, 2)
        snap = view.snapshot().replica
        assert snap is not None
        assert (snap.on_replica, snap.on_primary, snap.waited) == (1, 1, 1)
        assert snap.last_wait >= 0.3
        # The replica still holds the old row: the value came from the primary.
        assert await cluster.on_replica() == (1, 1)
        await cluster.resume()
        await cluster.caught_up()
        # A token the replica has reached builds there, without waiting.
        token = {SOURCE: await cluster.write()}
        await cluster.caught_up()
        read = await view.get(min_revision=token)
        assert labelled(read) == (3, 3)
        snap = view.snapshot().replica
        assert snap is not None and (snap.on_replica, snap.on_primary) == (2, 1)
    finally:
        await keeper.aclose()


async def test_a_causal_token_served_by_a_replica_that_catches_up_within_the_wait(
    cluster: Cluster,
) -> None:
    await cluster.write()
    await cluster.caught_up()
    keeper, view = await keeper_on(cluster, wait=30.0)
    try:
        assert labelled(await view.get()) == (1, 1)
        await cluster.pause()
        token = {SOURCE: await cluster.write()}
        reading = asyncio.create_task(view.get(min_revision=token))
        for _ in range(3000):  # until the build is polling the paused replica
            if view.in_flight:
                break
            await asyncio.sleep(0.01)
        assert not reading.done()
        await cluster.resume()
        read = await reading
        assert labelled(read) == (2, 2)
        snap = view.snapshot().replica
        assert snap is not None
        assert (snap.on_replica, snap.on_primary, snap.waited) == (2, 0, 1)
    finally:
        await keeper.aclose()


async def test_an_unreachable_replica_builds_on_the_primary(cluster: Cluster) -> None:
    await cluster.write()
    dead = create_async_engine("postgresql+asyncpg://postgres:x@127.0.0.1:1/postgres")
    keeper = Keeper(SQLAlchemyRevisions(cluster.primary), settings=Settings(replica_wait=5))
    try:
        await keeper.start()
        view = keeper.view("items", build, sources=[SOURCE], replica=dead)
        read = await view.get()
        assert labelled(read) == (1, 1)
        snap = view.snapshot().replica
        assert snap is not None and (snap.on_replica, snap.on_primary, snap.waited) == (0, 1, 0)
    finally:
        await keeper.aclose()
        await dead.dispose()


async def test_a_source_added_while_building_that_is_behind_builds_on_the_primary(
    cluster: Cluster,
) -> None:
    """``ctx.depend`` reads the added source in the build's snapshot; when the replica holds
    an older revision of it than the keeper knows, the section is built on the primary."""
    async with cluster.primary.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS notes"))
        await conn.execute(text("CREATE TABLE notes (id int PRIMARY KEY, n int NOT NULL)"))
        await conn.execute(text("INSERT INTO notes VALUES (1, 0)"))
    await cluster.caught_up()

    async def with_notes(ctx: BuildContext) -> dict[str, Any]:
        assert ctx.session is not None
        found = await ctx.depend("table:notes")
        n = await ctx.session.scalar(text("SELECT n FROM notes WHERE id = 1"))
        return {"n": n, "label": found["table:notes"]}

    keeper = Keeper(
        SQLAlchemyRevisions(cluster.primary), settings=Settings(replica_wait=0.1), probe="always"
    )
    try:
        await keeper.start()
        view = keeper.view("notes", with_notes, sources=[SOURCE], replica=cluster.replica)
        first = orjson.loads((await view.get()).body)
        assert first == {"n": 0, "label": 0}
        await cluster.pause()
        async with cluster.primary.begin() as conn:
            revs = await conn.run_sync(lambda c: bump_counters(c, ["table:notes"]))
            await conn.execute(
                text("UPDATE notes SET n = :n WHERE id = 1"), {"n": revs["table:notes"]}
            )
        read = await view.get()
        assert orjson.loads(read.body) == {"n": 1, "label": 1}
        assert read.entry.vector["table:notes"] == 1
        snap = view.snapshot().replica
        assert snap is not None
        assert (snap.on_replica, snap.on_primary, snap.behind) == (1, 1, 1)
    finally:
        await keeper.aclose()
        async with cluster.primary.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS notes"))


async def test_a_replica_that_never_answers_builds_on_the_primary_after_its_timeout(
    cluster: Cluster,
) -> None:
    """A socket that accepts and never speaks: the driver alone would wait a minute."""
    await cluster.write()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    mute = create_async_engine(f"postgresql+asyncpg://postgres:x@127.0.0.1:{port}/postgres")
    replica = ReadReplica(mute, primary=cluster.primary, wait=5.0, timeout=0.2)
    keeper = Keeper(SQLAlchemyRevisions(cluster.primary))
    try:
        await keeper.start()
        view = keeper.view("items", build, sources=[SOURCE], replica=replica)
        read = await asyncio.wait_for(view.get(), 30)
        assert labelled(read) == (1, 1)
        snap = view.snapshot().replica
        assert snap is not None and (snap.on_replica, snap.on_primary, snap.waited) == (0, 1, 0)
    finally:
        await keeper.aclose()
        await mute.dispose()
        silent.close()
