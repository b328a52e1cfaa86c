"""The buses between processes, against real servers: delivery between instances (and
processes), publish from other threads, malformed messages, reconnect after the server killed
the listening connection, large maps, trigger notifications, and bus_from_url."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg
import orjson
import pytest
from sqlalchemy import text

from freshkeep import Keeper, LocalBus, Settings
from freshkeep.buses import bus_from_url
from freshkeep.buses.base import RemoteBus
from freshkeep.buses.messages import decode, encode
from freshkeep.buses.postgres import MAX_PAYLOAD, PostgresBus, libpq_dsn
from freshkeep.buses.redis import RedisBus
from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError
from freshkeep.ports import Bus
from freshkeep.sql import migrate
from freshkeep.sql.triggers import install_triggers
from freshkeep.testing.conformance import BusSuite
from tests.conftest import POSTGRES_URL, REDIS_URL, PgSchema, need_service

TIMEOUT = 10.0
FAST = {"reconnect_backoff": 0.05, "max_reconnect_backoff": 0.2, "ping_interval": 1.0}


class Inbox:
    """A listener that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[dict[str, Revision], str]] = asyncio.Queue()

    def __call__(self, revisions: Mapping[str, Revision], origin: str) -> None:
        self.queue.put_nowait((dict(revisions), origin))

    async def next(self) -> tuple[dict[str, Revision], str]:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait (bounded) for ``condition``: for state no event signals, like a failed connect."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def channel_name() -> str:
    return f"fk_{uuid.uuid4().hex[:16]}"


Factory = Callable[..., RemoteBus]


@pytest.fixture(params=["redis", "postgres"])
async def make_bus(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Makes started-later buses of one kind on one fresh channel; closes them after."""
    channel = channel_name()
    buses: list[RemoteBus] = []
    if request.param == "redis":
        need_service("Redis", REDIS_URL, 6379)
    else:
        need_service("PostgreSQL", POSTGRES_URL, 5432)

    def make(**kw: Any) -> RemoteBus:
        options = {**FAST, **kw}
        bus: RemoteBus
        if request.param == "redis":
            bus = RedisBus(REDIS_URL, channel, **options)
        else:
            bus = PostgresBus(POSTGRES_URL, channel, **options)
        buses.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in buses:
            await bus.aclose()


class TestRemoteBuses(BusSuite):
    """The Redis and PostgreSQL buses, two instances on one channel."""

    @pytest.fixture
    async def buses(self, make_bus: Factory) -> AsyncIterator[tuple[Bus, Bus]]:
        a, b = make_bus(), make_bus()
        assert await a.start() and await b.start()
        yield a, b


async def kill_listener(bus: RemoteBus) -> None:
    """Close the bus's listening connection from the server side."""
    if isinstance(bus, RedisBus):
        import redis.asyncio as aioredis

        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            clients = await admin.client_list()
            ids = [c["id"] for c in clients if c.get("name") == bus.client_name]
            assert len(ids) == 1, ids
            assert await admin.client_kill_filter(_id=ids[0]) == 1
        finally:
            await admin.aclose()
        return
    assert isinstance(bus, PostgresBus) and bus.listener_pid is not None
    admin = await asyncpg.connect(libpq_dsn(POSTGRES_URL))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", bus.listener_pid)
    finally:
        await admin.close()


async def test_a_publish_reaches_the_other_instance(make_bus: Factory) -> None:
    a, b = make_bus(), make_bus()
    assert await a.start() and await b.start()
    inbox_a, inbox_b = Inbox(), Inbox()
    a.subscribe(inbox_a)
    unsubscribe = b.subscribe(inbox_b)
    await a.publish({"table:t": 1, "files:x": "3@9"}, origin="A")
    expected = ({"table:t": 1, "files:x": "3@9"}, "A")
    assert await inbox_b.next() == expected
    assert await inbox_a.next() == expected  # the publisher hears itself: keepers skip it
    await a.publish({}, origin="A")  # nothing to say: nothing sent
    unsubscribe()
    await b.publish({"table:t": 2}, origin="B")
    assert await inbox_a.next() == ({"table:t": 2}, "B")
    assert inbox_b.queue.empty()
    sa, sb = a.snapshot().to_dict(), b.snapshot().to_dict()
    assert (sa["published"], sa["received"], sa["connected"], sa["reconnects"]) == (1, 2, True, 0)
    assert (sb["published"], sb["errors"]) == (1, 0)


async def test_publish_nowait_from_another_thread(make_bus: Factory) -> None:
    a, b = make_bus(), make_bus()
    a.publish_nowait({"table:t": 1}, origin="early")  # not started: dropped, counted
    assert a.snapshot().dropped == 1
    await a.start()
    await b.start()
    inbox = Inbox()
    b.subscribe(inbox)
    await asyncio.to_thread(a.publish_nowait, {"table:t": 2}, origin="thread")
    a.publish_nowait({"table:t": 3}, origin="loop")
    assert await inbox.next() == ({"table:t": 2}, "thread")
    assert await inbox.next() == ({"table:t": 3}, "loop")


async def test_pending_messages_are_flushed_on_close_and_bounded(make_bus: Factory) -> None:
    a, b, c = make_bus(), make_bus(max_pending=1), make_bus()
    await a.start()
    assert await b.start() and await b.start()  # a second start() is a no-op
    await c.start()
    inbox = Inbox()
    c.subscribe(inbox)
    for i in range(3):  # enqueued in one go: the sender takes the first, the rest overflow
        b.publish_nowait({"table:t": i}, origin="B")
    a.publish_nowait({"table:t": 10}, origin="A")
    await a.aclose()  # sends what is pending first
    got = [await inbox.next(), await inbox.next()]  # two connections: in either order
    assert sorted(got, key=lambda m: m[1]) == [({"table:t": 10}, "A"), ({"table:t": 0}, "B")]
    assert (a.snapshot().published, a.snapshot().dropped) == (1, 0)
    await until(lambda: b.snapshot().published == 1)  # its reply may trail the delivery
    assert b.snapshot().dropped == 2
    a.publish_nowait({"table:t": 11}, origin="A")  # closed: dropped
    assert a.snapshot().dropped == 1 and not a.snapshot().started


def test_on_connect_callbacks_that_fail_are_counted() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0")
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("resync bug")

    bus.on_connect(broken)
    remove = bus.on_connect(lambda: calls.append("removed"))
    remove()
    bus.on_connect(lambda: calls.append("ok"))
    bus._connected()
    assert calls == ["ok"]
    assert bus.snapshot().errors == 1 and bus.snapshot().last_error == "RuntimeError: resync bug"


async def test_malformed_messages_and_failing_listeners_are_counted(make_bus: Factory) -> None:
    a, b = make_bus(), make_bus()
    await a.start()
    await b.start()
    inbox = Inbox()

    def broken(revisions: Mapping[str, Revision], origin: str) -> None:
        raise RuntimeError("listener bug")

    b.subscribe(broken)
    b.subscribe(inbox)
    for junk in (b"not json", b"[1]", b'{"o": 1, "r": {}}', b'{"o": "x", "r": {"a": true}}'):
        await a._send(junk)
    await a.publish({"table:t": 1}, origin="A")
    assert await inbox.next() == ({"table:t": 1}, "A")  # after the junk, in order
    status = b.snapshot().to_dict()
    assert (status["malformed"], status["received"], status["errors"]) == (4, 1, 5)
    assert status["last_error"] == "RuntimeError: listener bug"


async def test_reconnects_after_the_server_kills_the_listener(make_bus: Factory) -> None:
    a, b = make_bus(), make_bus()
    connects: asyncio.Queue[int] = asyncio.Queue()
    resyncs: asyncio.Queue[int] = asyncio.Queue()

    async def resync() -> None:  # what the keeper's resync is wired as
        resyncs.put_nowait(b.snapshot().reconnects)

    b.on_connect(lambda: connects.put_nowait(b.snapshot().reconnects))
    b.on_connect(resync)
    await a.start()
    assert await b.start()
    assert await asyncio.wait_for(connects.get(), TIMEOUT) == 0
    assert await asyncio.wait_for(resyncs.get(), TIMEOUT) == 0
    inbox = Inbox()
    b.subscribe(inbox)
    await kill_listener(b)
    assert await asyncio.wait_for(connects.get(), TIMEOUT) == 1
    assert await asyncio.wait_for(resyncs.get(), TIMEOUT) == 1
    status = b.snapshot().to_dict()
    assert status["connected"] and status["reconnects"] == 1
    assert status["last_error"] is not None and status["errors"] >= 1
    started, ended = status["last_outage_started_at"], status["last_outage_ended_at"]
    assert started is not None and ended is not None and started <= ended
    await a.publish({"table:t": 5}, origin="A")
    assert await inbox.next() == ({"table:t": 5}, "A")


async def test_a_server_that_is_down() -> None:
    redis_down = RedisBus("redis://127.0.0.1:1/0", channel_name(), **FAST, publish_timeout=2)
    pg_down = PostgresBus("postgresql://u@127.0.0.1:1/x", channel_name(), **FAST, connect_timeout=2)
    for bus in (redis_down, pg_down):
        try:
            assert await bus.start(timeout=0) is False
            await until(lambda b=bus: b.snapshot().errors >= 2)
            await bus.publish({"table:t": 1}, origin="A")  # counted, never raised
            status = bus.snapshot().to_dict()
            assert not status["connected"] and status["published"] == 0
            assert status["last_outage_started_at"] is not None
            assert status["last_outage_ended_at"] is None
        finally:
            await bus.aclose()


async def test_postgres_splits_large_maps() -> None:
    need_service("PostgreSQL", POSTGRES_URL, 5432)
    channel = channel_name()
    a, b = PostgresBus(POSTGRES_URL, channel), PostgresBus(POSTGRES_URL, channel)
    try:
        await b.start()
        inbox = Inbox()
        b.subscribe(inbox)
        revisions: dict[str, Revision] = {f"table:{'t' * 200}{i}": i for i in range(100)}
        payloads = a._payloads(revisions, "A")
        assert len(payloads) > 1 and all(len(p) <= MAX_PAYLOAD for p in payloads)
        await a.publish(revisions, origin="A")  # without start(): publishing needs no listener
        merged: dict[str, Revision] = {}
        for _ in payloads:
            part, origin = await inbox.next()
            assert origin == "A"
            merged |= part
        assert merged == revisions
        assert a.snapshot().published == len(payloads)
    finally:
        await a.aclose()
        await b.aclose()


async def test_trigger_notifications_reach_the_postgres_bus(pg_schema: PgSchema) -> None:
    engine = pg_schema.sync_engine()
    bus = PostgresBus(pg_schema.async_url, channel_name(), **FAST)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE items (id int)"))
        migrate.upgrade(engine)
        install_triggers(engine, ["items"], channel=bus.channel)
        keeper = Keeper(bus=bus, settings=Settings())
        inbox = Inbox()
        bus.subscribe(inbox)
        await bus.start()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO items VALUES (1), (2)"))
        assert await inbox.next() == ({"table:items": 1, "table:items/*": 1}, "trigger")
        assert keeper.stats.remote_revisions == 1
        await keeper.aclose()
    finally:
        await bus.aclose()
        engine.dispose()


async def test_keepers_on_two_redis_buses(redis_client: Any) -> None:
    channel = channel_name()
    a, b = RedisBus(REDIS_URL, channel, **FAST), RedisBus(redis_client, channel, **FAST)
    try:
        await a.start()
        await b.start()
        ka, kb = Keeper(bus=a, settings=Settings()), Keeper(bus=b, settings=Settings())
        inbox = Inbox()
        b.subscribe(inbox)
        await ka.publish({"table:t": 1})
        assert await inbox.next() == ({"table:t": 1}, ka.instance_id)
        assert (kb.stats.remote_revisions, kb.tracker.snapshot.get("table:t")) == (1, 1)
        assert ka.stats.remote_revisions == 0  # its own message, skipped
        await ka.aclose()
        await kb.aclose()
    finally:
        await a.aclose()
        await b.aclose()


def publish_from_child(url: str, channel: str) -> None:
    """Run in a spawned process: publish one message through a RedisBus."""

    async def main() -> None:
        bus = RedisBus(url, channel)
        try:
            await bus.publish({"table:t": 42}, origin=f"pid:{os.getpid()}")
            assert bus.snapshot().published == 1
        finally:
            await bus.aclose()

    asyncio.run(main())


async def test_a_child_process_publishes_through_redis() -> None:
    need_service("Redis", REDIS_URL, 6379)
    channel = channel_name()
    bus = RedisBus(REDIS_URL, channel, **FAST)
    try:
        assert await bus.start()
        inbox = Inbox()
        bus.subscribe(inbox)
        child = multiprocessing.get_context("spawn").Process(
            target=publish_from_child, args=(REDIS_URL, channel)
        )
        child.start()
        await asyncio.to_thread(child.join, 60)
        assert child.exitcode == 0
        revisions, origin = await inbox.next()
        assert revisions == {"table:t": 42} and origin == f"pid:{child.pid}"
    finally:
        await bus.aclose()


# -- without servers ---------------------------------------------------------------------------


def test_bus_from_url() -> None:
    settings = Settings(bus_channel="chan", bus_ping_interval=2.0)
    assert isinstance(bus_from_url("local://"), LocalBus)
    redis_bus = bus_from_url("rediss://h:6380/1", settings=settings)
    assert isinstance(redis_bus, RedisBus) and redis_bus.channel == "chan"
    assert redis_bus.ping_interval == 2.0
    pg = bus_from_url("postgresql+asyncpg://u@h/db", settings=Settings())
    assert isinstance(pg, PostgresBus)
    assert (pg.dsn, pg.channel) == ("postgresql://u@h/db", "freshkeep")
    explicit = bus_from_url("redis://h", channel="x", settings=settings)
    assert isinstance(explicit, RedisBus) and explicit.channel == "x"
    for bad in ("kafka://h", "h:6379"):
        with pytest.raises(ConfigurationError, match="unknown bus URL scheme"):
            bus_from_url(bad)


def test_messages_are_json_and_checked() -> None:
    message = orjson.loads(encode({"table:t": 1}, "o"))
    assert message.keys() == {"o", "r", "t"} and message["r"] == {"table:t": 1}
    assert decode(b'{"o":"trigger","r":{"table:t":3}}') == ({"table:t": 3}, "trigger")
    assert decode('{"o" : "x", "r" : {"a" : "1@2"}}') == ({"a": "1@2"}, "x")
    for junk in (b"\x80\x04", b"null", b'{"r": 1}', b'{"r": {"a": null}}'):
        with pytest.raises(ValueError):
            decode(junk)
