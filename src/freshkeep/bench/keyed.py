"""Keyed level: per-table against per-key revisions, for a view read by key under writes.

The scenario (``freshkeep bench --level keyed``): ``keys`` customers (1,000), each with
``orders_per_key`` orders; a builder that costs one query per key (the count and the sum of the
key's orders); reads of ``view.get(customer_id)`` spread uniformly over the keys; writes at
``write_rate`` (4/s), each an ORM insert of an order or an update of one, for one key drawn
uniformly, through a tracked session. The same builder serves three views:

``per_table``
    ``sources=["table:orders"]``: any write to ``orders`` invalidates every key;
``per_key``
    ``sources=[table_source(Order, by="customer_id")]`` (1,024 buckets, the default): a write
    invalidates the keys of its bucket;
``per_key_<small>``
    the same with ``small_buckets`` (64) buckets: more keys share a bucket.

A keeper partitions a table one way (every reader and writer of ``orders`` uses the same
bucket count), so the small-bucket view has a keeper and a database of its own: a copy of the
same rows (the same seed), and every write applied to both databases in the same tick. The
other two views share one keeper and one database.

Customer ids are a seeded sample of ``1..id_space`` (1,000,000), as the keys a busy table would
see; an integer maps to the bucket ``id mod buckets``, so ids spread like that share buckets as
a hash would (consecutive ids below the bucket count would never share one).

**Side by side.** Reads run in batches (``batch`` keys drawn at random); every view reads the
same batch in turn, the order rotating from batch to batch; writes run between batches, paced
at ``write_rate``; batches are paced at ``read_rate`` reads per second per view (back to back
when the views fall behind). So every view answers exactly the same reads between the same
writes, and a burst of load from elsewhere on the machine weighs on all of them.

**What is counted.** Per view: each read's status and time (reads/s: reads over the time spent
in them, the writes and the other views' reads left out), builds and the time in the builder.
A build of a key that was written since its last build is *needed*; any other build is a
*false invalidation* (a write to another key of its bucket, or, for the per-table view, to any
other key). Every key is built once in every view before the measured phase.

A model predicts every view's builds from the reads and writes alone (a key is rebuilt when
its table, or its bucket, was written since it was last read); with nothing else moving the
revisions, the measured builds equal the model's, and the per-key views' builds are a subset
of the per-table view's: ``per_key`` ≤ ``per_table``, and ``per_key`` ≤ ``per_key_<small>`` ≤
``per_table`` when the small count divides 1,024 (64 does: a key's bucket among 1,024 is then
inside its bucket among 64).
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ForeignKey, Integer, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep.bench.progress import NullReporter, Reporter
from freshkeep.buses.local import LocalBus
from freshkeep.core.partitions import DEFAULT_BUCKETS, Partitioned
from freshkeep.core.policy import Policy
from freshkeep.exceptions import ConfigurationError
from freshkeep.integrations.sqlalchemy import SQLAlchemyRevisions, table_source, track
from freshkeep.keeper import Keeper
from freshkeep.sql.engine import async_url, create_engine, display_url, writer_engine
from freshkeep.sql.schema import metadata as freshkeep_metadata
from freshkeep.stores.memory import MemoryStore
from freshkeep.views import BuildContext, Builder, Section, View


class _Base(DeclarativeBase):
    pass


class Customer(_Base):
    """A key of the keyed level."""

    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class Order(_Base):
    """What the keyed level's builder aggregates, per customer."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer, default=0)


@dataclass
class KeyedConfig:
    """What the keyed level runs (``freshkeep bench --level keyed``)."""

    keys: int = 1_000
    orders_per_key: int = 20
    seconds: float = 30.0
    """The measured phase (after every key was built once in every view)."""
    read_rate: float = 300.0
    """Reads per second offered to each view (the views fall behind when they cannot)."""
    write_rate: float = 4.0
    batch: int = 50
    """Keys read by every view in turn between two looks at the clock."""
    small_buckets: int = 64
    id_space: int = 1_000_000
    """Customer ids are a seeded sample of ``1..id_space``."""
    seed: int = 1
    resync_interval_s: float = 1.0
    database: str | None = None
    """A PostgreSQL URL (two fresh schemas are created on it and dropped at the end); ``None``:
    two SQLite files in a temporary directory."""


@dataclass
class _Tally:
    """What one view did during the measured phase."""

    name: str
    label: str
    sources: str
    buckets: int | None
    partition: Partitioned | None
    times: dict[str, list[int]] = field(default_factory=dict)
    """ns of each read, by its status."""
    builds: int = 0
    needed: int = 0
    false: int = 0
    build_ns: int = 0
    model: int = 0
    sharing: int = 0
    """Over the writes: the other keys of the written key's bucket (every other key for the
    per-table view): the false invalidations that would follow if every key were read."""
    dirty: set[int] = field(default_factory=set)
    """Keys written since their last build."""

    def figures(self, writes: int) -> dict[str, Any]:
        """The view's figures; ``writes``: how many writes the measured phase made."""

        def per_write(n: int) -> float:
            return n / writes if writes else 0.0

        reads = sum(len(t) for t in self.times.values())
        read_ns = sum(sum(t) for t in self.times.values())
        hits = sorted(self.times.get("hit", []))
        others = sorted(x for s, t in self.times.items() if s != "hit" for x in t)
        return {
            "name": self.name,
            "label": self.label,
            "sources": self.sources,
            "buckets": self.buckets,
            "reads": reads,
            "statuses": {s: len(t) for s, t in sorted(self.times.items())},
            "hit_ratio": len(hits) / reads if reads else 0.0,
            "read_s": read_ns / 1e9,
            "reads_per_s": reads / (read_ns / 1e9) if read_ns else 0.0,
            "hit_us": _stats(hits, 1e3),
            "rebuild_ms": _stats(others, 1e6),
            "builds": self.builds,
            "builds_per_write": per_write(self.builds),
            "needed": self.needed,
            "false": self.false,
            "false_per_write": per_write(self.false),
            "false_share": self.false / self.builds if self.builds else 0.0,
            "sharing_per_write": per_write(self.sharing),
            "model_builds": self.model,
            "build_ms_mean": self.build_ns / self.builds / 1e6 if self.builds else 0.0,
        }


def _stats(ns: list[int], unit: float) -> dict[str, float]:
    """Mean, p50 and p99 of sorted ``ns``, in ``unit`` (1e3: µs, 1e6: ms)."""
    if not ns:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p99": 0.0}
    return {
        "count": len(ns),
        "mean": sum(ns) / len(ns) / unit,
        "p50": ns[len(ns) // 2] / unit,
        "p99": ns[min(len(ns) - 1, len(ns) * 99 // 100)] / unit,
    }


@dataclass
class _Store:
    """One database with its keeper and tracked session factory."""

    engine: AsyncEngine
    keeper: Keeper
    sessions: async_sessionmaker[AsyncSession]


def _ids(config: KeyedConfig) -> list[int]:
    if not 1 <= config.keys <= config.id_space:
        raise ConfigurationError(f"keys must be from 1 to {config.id_space:,}, not {config.keys}")
    if config.orders_per_key < 1:
        raise ConfigurationError(f"orders_per_key must be 1 or more, not {config.orders_per_key}")
    return sorted(random.Random(config.seed).sample(range(1, config.id_space + 1), config.keys))


async def _seed(engine: AsyncEngine, ids: list[int], per_key: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
        await conn.run_sync(freshkeep_metadata.create_all)
        await conn.execute(insert(Customer), [{"id": i} for i in ids])
        rows = [
            {"id": n * per_key + j + 1, "customer_id": c, "amount": rng.randrange(1, 100)}
            for n, c in enumerate(ids)
            for j in range(per_key)
        ]
        for start in range(0, len(rows), 5_000):
            await conn.execute(insert(Order), rows[start : start + 5_000])


@asynccontextmanager
async def _databases(config: KeyedConfig) -> AsyncIterator[tuple[str, list[AsyncEngine]]]:
    """Two empty databases: SQLite files in a temporary directory, or two fresh schemas on the
    PostgreSQL server of ``config.database`` (dropped at the end). Yields their description
    and their engines."""
    if config.database is None:
        with tempfile.TemporaryDirectory(prefix="freshkeep-keyed-") as tmp:
            engines = [create_engine(str(Path(tmp) / f"{n}.db")) for n in ("a", "b")]
            try:
                yield "SQLite files (aiosqlite)", engines
            finally:
                for e in engines:
                    await e.dispose()
        return
    url = async_url(config.database)
    if not url.startswith("postgresql"):
        raise ConfigurationError(
            "the keyed level runs on SQLite files of its own, or on PostgreSQL: give a "
            f"postgresql:// URL, not {display_url(url)!r}"
        )
    schemas = [f"fk_bench_keyed_{uuid.uuid4().hex[:10]}_{n}" for n in ("a", "b")]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        try:
            async with admin.connect() as conn:
                for s in schemas:
                    await conn.execute(text(f'CREATE SCHEMA "{s}"'))
        except Exception as exc:  # a driver's error: one line, not a traceback
            raise ConfigurationError(
                f"the keyed level cannot use {display_url(url)!r}: {type(exc).__name__}: {exc}"
            ) from exc
        engines = [
            create_engine(url, connect_args={"server_settings": {"search_path": s}})
            for s in schemas
        ]
        try:
            yield f"PostgreSQL ({display_url(url)}, asyncpg)", engines
        finally:
            for e in engines:
                await e.dispose()
            async with admin.connect() as conn:
                for s in schemas:
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{s}" CASCADE'))
    finally:
        await admin.dispose()


def _builder(engine: AsyncEngine, on_build: Callable[[str, int, int], None]) -> Builder:
    query = select(func.count(Order.id), func.coalesce(func.sum(Order.amount), 0))

    async def totals(ctx: BuildContext) -> dict[str, int]:
        """The key's orders: how many, and their total (one query)."""
        t = time.perf_counter_ns()
        async with engine.connect() as conn:
            count, amount = (await conn.execute(query.where(Order.customer_id == ctx.key))).one()
        on_build(ctx.view, ctx.key, time.perf_counter_ns() - t)
        return {"orders": int(count), "amount": int(amount)}

    return totals


async def _store(
    engine: AsyncEngine,
    config: KeyedConfig,
    views: list[tuple[_Tally, list[str | Partitioned]]],
    on_build: Callable[[str, int, int], None],
) -> tuple[_Store, dict[str, View]]:
    """A keeper on ``engine`` with ``views`` (each: its tally and its sources), one builder,
    and write hooks on a session factory; started."""
    keeper = Keeper(
        SQLAlchemyRevisions(engine),
        store=MemoryStore(max_entries=4 * config.keys * max(1, len(views))),
        bus=LocalBus(),
        resync_interval=config.resync_interval_s,
        policy=Policy.strict(),
    )
    build = _builder(engine, on_build)
    # The section keeper.view(name, build, sources=sources) makes, spelt out.
    made = {
        t.name: keeper.view(t.name, sections={"default": Section(build, sources)})
        for t, sources in views
    }
    sessions = async_sessionmaker(writer_engine(engine), expire_on_commit=False)
    track(keeper, sessions)
    await keeper.start()
    return _Store(engine, keeper, sessions), made


async def _write(store: _Store, key: int, kind: str, order_id: int, amount: int) -> None:
    """One write for ``key`` through a tracked session: insert an order, or add ``amount``
    (1 or more) to one. An update always changes the row: an ORM update that sets a column to
    the value it has emits no statement, so it would bump nothing and write nothing."""
    async with store.sessions() as s, s.begin():
        if kind == "insert":
            s.add(Order(id=order_id, customer_id=key, amount=amount))
        else:
            found = await s.execute(select(Order).where(Order.id == order_id))
            order = found.scalar_one()
            order.amount += amount


async def run_keyed(config: KeyedConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the keyed level; return its figures."""
    rep = reporter if reporter is not None else NullReporter()
    ids = _ids(config)
    small = config.small_buckets
    if not 1 <= small < DEFAULT_BUCKETS:
        raise ConfigurationError(f"the small bucket count must be from 1 to 1023, not {small}")
    per_key = table_source(Order, by="customer_id")
    per_key_small = table_source(Order, by="customer_id", buckets=small)
    tallies = [
        _Tally("per_table", "per-table", "`table:orders`", None, None),
        _Tally(
            "per_key",
            f"per-key, {DEFAULT_BUCKETS:,} buckets",
            '`table_source(Order, by="customer_id")`',
            DEFAULT_BUCKETS,
            per_key,
        ),
        _Tally(
            f"per_key_{small}",
            f"per-key, {small:,} buckets",
            f'`table_source(Order, by="customer_id", buckets={small})`',
            small,
            per_key_small,
        ),
    ]
    by_name = {t.name: t for t in tallies}
    measuring = False

    def on_build(view: str, key: int, ns: int) -> None:
        if not measuring:
            return
        t = by_name[view]
        t.builds += 1
        t.build_ns += ns
        if key in t.dirty:
            t.needed += 1
            t.dirty.discard(key)
        else:
            t.false += 1

    rep.stage(
        f"keyed: seeding two databases of {config.keys:,} keys x {config.orders_per_key} orders",
        1,
    )
    async with AsyncExitStack() as stack:
        where, engines = await stack.enter_async_context(_databases(config))
        for engine in engines:
            await _seed(engine, ids, config.orders_per_key, config.seed)
        store_a, views_a = await _store(
            engines[0], config, [(tallies[0], ["table:orders"]), (tallies[1], [per_key])], on_build
        )
        stack.push_async_callback(store_a.keeper.aclose)
        store_b, views_b = await _store(
            engines[1], config, [(tallies[2], [per_key_small])], on_build
        )
        stack.push_async_callback(store_b.keeper.aclose)
        views = {**views_a, **views_b}
        rep.advance()
        rep.stage(f"keyed: building every key in {len(views)} views", len(views))
        for view in views.values():
            for key in ids:
                await view.get(key)
            rep.advance()
        measuring = True
        figures = await _measure(config, ids, tallies, views, [store_a, store_b], rep)
        figures["database"] = where
        return figures


class _Model:
    """The builds the reads and writes call for, and what each write's bucket holds.

    A key is rebuilt at a read when its table (per-table view), or its bucket (per-key
    views), was written since the key was last read: every read leaves the entry current.
    """

    def __init__(self, ids: list[int], tallies: list[_Tally]) -> None:
        self.ids, self.tallies, self.writes = ids, tallies, 0
        self.last_read = dict.fromkeys(ids, 0)
        """The write count at each key's last read."""
        self.last_write: dict[int, dict[int, int]] = {}
        """buckets -> bucket -> the write count at its last write."""
        self.members: dict[int, dict[int, int]] = {}
        """buckets -> bucket -> how many keys it holds."""
        for t in tallies:
            if t.partition is not None:
                counts = self.members.setdefault(t.partition.buckets, {})
                self.last_write[t.partition.buckets] = {}
                for key in ids:
                    b = t.partition.bucket(key)
                    counts[b] = counts.get(b, 0) + 1

    def wrote(self, key: int) -> None:
        self.writes += 1
        for t in self.tallies:
            t.dirty.add(key)
            if t.partition is None:
                t.sharing += len(self.ids) - 1
            else:
                b = t.partition.bucket(key)
                t.sharing += self.members[t.partition.buckets][b] - 1
                self.last_write[t.partition.buckets][b] = self.writes

    def read(self, keys: list[int]) -> None:
        for key in keys:
            seen = self.last_read[key]
            for t in self.tallies:
                if t.partition is None:
                    t.model += self.writes > seen
                else:
                    moved = self.last_write[t.partition.buckets].get(t.partition.bucket(key), 0)
                    t.model += moved > seen
            self.last_read[key] = self.writes


class _Writes:
    """The writes, drawn from a seeded generator: a key, and an insert of a new order or an
    update of one of the key's orders, half and half."""

    def __init__(self, ids: list[int], per_key: int, seed: int) -> None:
        self.ids, self.rng = ids, random.Random(seed)
        self.orders = {
            key: [n * per_key + j + 1 for j in range(per_key)] for n, key in enumerate(ids)
        }
        self.next_order = len(ids) * per_key + 1
        self.counts = {"insert": 0, "update": 0}

    def draw(self) -> tuple[int, str, int, int]:
        """``(key, kind, order id, amount)`` of the next write."""
        rng = self.rng
        key = self.ids[rng.randrange(len(self.ids))]
        kind = "insert" if rng.random() < 0.5 else "update"
        if kind == "insert":
            order_id = self.next_order
            self.next_order += 1
            self.orders[key].append(order_id)
        else:
            order_id = self.orders[key][rng.randrange(len(self.orders[key]))]
        self.counts[kind] += 1
        return key, kind, order_id, rng.randrange(1, 100)


async def _measure(
    config: KeyedConfig,
    ids: list[int],
    tallies: list[_Tally],
    views: dict[str, View],
    stores: list[_Store],
    rep: Reporter,
) -> dict[str, Any]:
    rng = random.Random(config.seed + 2)  # the keys read
    writes = _Writes(ids, config.orders_per_key, config.seed + 3)
    model = _Model(ids, tallies)
    gets = [(t, views[t.name].get) for t in tallies]
    clock = time.perf_counter_ns
    rep.stage(f"keyed: {config.seconds:g} s of reads and writes", config.seconds)
    start = time.monotonic()
    end = start + config.seconds
    write_every = 1.0 / config.write_rate
    batch_every = config.batch / config.read_rate
    next_write = start + write_every
    batches = 0
    shown = start
    while (now := time.monotonic()) < end:
        while next_write <= now:
            key, kind, order_id, amount = writes.draw()
            for i in range(len(stores)):  # the order alternates: neither copy always first
                store = stores[(model.writes + i) % len(stores)]
                await _write(store, key, kind, order_id, amount)
            model.wrote(key)
            next_write += write_every
        keys = [ids[rng.randrange(len(ids))] for _ in range(config.batch)]
        model.read(keys)
        for i in range(len(gets)):  # the order rotates: no view always reads first
            t, get = gets[(batches + i) % len(gets)]
            times = t.times
            for key in keys:
                began = clock()
                status = (await get(key)).status
                took = clock() - began
                if status in times:
                    times[status].append(took)
                else:
                    times[status] = [took]
        batches += 1
        if (now := time.monotonic()) - shown >= 1.0:
            rep.advance(now - shown)
            shown = now
        delay = start + batches * batch_every - now
        await asyncio.sleep(max(0.0, delay))  # also lets the keepers' background work run
    elapsed = time.monotonic() - start
    return {
        "keys": len(ids),
        "orders_per_key": config.orders_per_key,
        "id_space": config.id_space,
        "seconds": config.seconds,
        "elapsed_s": elapsed,
        "read_rate": config.read_rate,
        "reads_per_s_per_view": batches * config.batch / elapsed if elapsed else 0.0,
        "write_rate": config.write_rate,
        "batch": config.batch,
        "batches": batches,
        "resync_interval_s": config.resync_interval_s,
        "writes": {"count": model.writes, **writes.counts},
        "views": [t.figures(model.writes) for t in tallies],
    }
