"""What freshkeep asks of Redis and PostgreSQL: load per 1,000 writes/s and per 10,000 reads/s.

    python -m benchmarks.sizing                          # 200 writes/s, 5,000 reads/s, 5 s
    python -m benchmarks.sizing --writes 100 --reads 2000 --seconds 10 --instances 3 --json out.json

A few keepers (the "instances", in one process) share a Redis store, build lock and pub/sub
bus, and a PostgreSQL database of their own (``fk_sizing_<hex>`` on
``FRESHKEEP_TEST_POSTGRES_URL``, dropped afterwards). Redis is a private ``redis-server`` on a
free port when one is installed, so its ``INFO commandstats`` and CPU are this run's alone
(else ``FRESHKEEP_TEST_REDIS_URL``, shared with whatever else uses it: the figures say so).

One view, ``summary`` (``SELECT count(*), sum(n) FROM items``, strict policy), on every
instance. Writes are ORM updates of one row of ``items`` through a session tracked by the
write hooks of instance 0. Three phases, each at a fixed rate for ``--seconds``:

- ``writes``: writes only;
- ``hits``: reads only, spread over the instances (after one warm-up read each: all hits);
- ``mixed``: writes and reads together (each write makes the next read of every instance a
  miss: one instance builds, the others take its entry from Redis or wait on its lock).

Measured per phase: Redis commands by name and Redis CPU (``INFO``), PostgreSQL statements by
verb and transactions (counted on the client by SQLAlchemy events: what the server runs), and
the CPU of this database's PostgreSQL backends (``/proc``, when readable). The report scales
each to per 1,000 writes/s (``writes``, ``mixed``) and per 10,000 reads/s (``hits``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import Integer, create_engine, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from freshkeep import Keeper, Policy, Settings
from freshkeep.integrations.sqlalchemy import track
from freshkeep.ports import RemoteBusSnapshot
from freshkeep.sql import SQLAlchemyRevisions

POSTGRES_URL = os.environ.get(
    "FRESHKEEP_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FRESHKEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ROWS = 1000
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of this run on a free port (no persistence), or the shared one."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = REDIS_URL
        self.private = False

    async def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            return
        port = _free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url, self.private = f"redis://127.0.0.1:{port}/0", True
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(500):
                try:
                    await client.ping()
                    return
                except OSError:
                    await asyncio.sleep(0.01)
                except aioredis.ConnectionError:
                    await asyncio.sleep(0.01)
            raise RuntimeError("redis-server did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


async def redis_stats(client: aioredis.Redis) -> tuple[Counter[str], float]:
    """Calls by command and CPU seconds (user + sys) of the Redis server now."""
    stats = await client.info("commandstats")
    calls = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
    cpu = await client.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def pg_cpu(engine: AsyncEngine, database: str) -> float | None:
    """CPU seconds used so far by the backends connected to ``database`` (``/proc``; a
    backend that ended in between is not counted)."""
    async with engine.connect() as conn:
        pids = (
            await conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
            )
        ).scalars()
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                return None
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


async def paced(rate: float, seconds: float, op: Callable[[int], Awaitable[Any]]) -> int:
    """Start ``op(i)`` ``rate`` times a second for ``seconds``, in ticks of 10 ms, with up to
    32 calls in flight (a call started late is not made up for by a burst)."""
    if rate <= 0:
        return 0
    gate = asyncio.Semaphore(32)
    tasks: set[asyncio.Task[Any]] = set()

    async def one(i: int) -> None:
        async with gate:
            await op(i)

    start, count, started = time.perf_counter(), int(rate * seconds), 0
    while started < count:
        due = min(count, int((time.perf_counter() - start) * rate) + 1)
        for i in range(started, due):
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        started = due
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    return count


async def run(
    writes: float, reads: float, seconds: float, instances: int, bus: str = "redis"
) -> dict[str, Any]:
    db = f"fk_sizing_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        POSTGRES_URL.replace("+asyncpg", "+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    server = PrivateRedis()
    await server.start()
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{db}"
    engine = create_async_engine(url, pool_size=10)
    builds = create_async_engine(url, pool_size=4)  # the builder's own: its queries apart
    statements: Counter[str] = Counter()

    def counting(e: AsyncEngine, role: str) -> None:
        def count(_c: Any, _cur: Any, stmt: str, *_a: Any) -> None:
            who = "freshkeep" if "freshkeep_" in stmt else role
            statements.update([f"{who} {stmt.lstrip().split(None, 1)[0].upper()}"])

        event.listen(e.sync_engine, "before_cursor_execute", count)
        event.listen(e.sync_engine, "commit", lambda _c: statements.update([f"{role} COMMIT"]))
        event.listen(e.sync_engine, "rollback", lambda _c: statements.update([f"{role} ROLLBACK"]))

    counting(engine, "app")
    counting(builds, "build")
    rclient = aioredis.Redis.from_url(server.url)
    keepers: list[Keeper] = []
    tag = uuid.uuid4().hex[:8]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(Item.__table__.insert(), [{"id": i, "n": 0} for i in range(ROWS)])
        await SQLAlchemyRevisions(engine).create_table()
        settings = Settings(
            store_url=server.url,
            bus_url=server.url if bus == "redis" else url,
            store_prefix=f"fk-sizing:{tag}:",
            bus_channel=f"fk-sizing:{tag}",
            resync_interval=1.0,
            probe="interval",  # revisions come by the bus (and the resync), as in production
        )

        async def summary(ctx: Any) -> dict[str, int]:
            async with builds.connect() as conn:
                row = (await conn.execute(select(func.count(), func.sum(Item.n)))).one()
            return {"rows": int(row[0]), "total": int(row[1] or 0)}

        views = []
        for _ in range(instances):
            k = Keeper.from_settings(SQLAlchemyRevisions(engine), settings=settings)
            keepers.append(k)
            views.append(k.view("summary", summary, sources=["table:items"], policy=Policy()))
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        track(keepers[0], sessions, [Item])
        for k in keepers:
            await k.start()
        for v in views:
            await v.get()
        rnd = random.Random(7)

        async def write(i: int) -> None:
            async with sessions() as s, s.begin():
                item = await s.get(Item, rnd.randrange(ROWS))
                assert item is not None
                item.n += 1

        async def read(i: int) -> None:
            await views[i % instances].get()

        phases: dict[str, Any] = {}
        for name, w, r in (("writes", writes, 0.0), ("hits", 0.0, reads), ("mixed", writes, reads)):
            await asyncio.sleep(0.3)  # let the previous phase's messages land
            for v in views:  # warm: every instance holds the current entry
                await v.get()
            before = _reads(views)
            published = _published(keepers)
            calls0, rcpu0 = await redis_stats(rclient)
            pcpu0 = await pg_cpu(engine, db)
            statements.clear()
            t0 = time.perf_counter()
            done_w, done_r = await asyncio.gather(paced(w, seconds, write), paced(r, seconds, read))
            for k in keepers:
                await k.wait_idle()
            elapsed = time.perf_counter() - t0
            sql = Counter(statements)
            calls1, rcpu1 = await redis_stats(rclient)
            pcpu1 = await pg_cpu(engine, db)
            redis_calls = calls1 - calls0
            redis_calls.subtract({"info": 2})  # this measurement's own
            phases[name] = {
                "bus": bus,
                "seconds": round(elapsed, 3),
                "writes_per_s": round(done_w / elapsed, 1),
                "reads_per_s": round(done_r / elapsed, 1),
                "redis_commands": {k: v for k, v in sorted(redis_calls.items()) if v > 0},
                "redis_cpu_s": round(rcpu1 - rcpu0, 3),
                "pg_statements": dict(sorted(sql.items())),
                "pg_backend_cpu_s": None
                if pcpu0 is None or pcpu1 is None
                else round(pcpu1 - pcpu0, 3),
                "reads": dict(_reads(views) - before),
                "bus_published": _published(keepers) - published,
                "writes": done_w,
            }
        return {
            "machine": f"{os.cpu_count()} CPUs, shared with other work",
            "redis": "private redis-server" if server.private else f"shared ({REDIS_URL})",
            "bus": bus,
            "instances": instances,
            "resync_interval": settings.resync_interval,
            "phases": phases,
        }
    finally:
        for k in keepers:
            await k.aclose()
        if not server.private:  # a shared Redis: leave nothing behind
            keys = [k async for k in rclient.scan_iter(match=f"fk-sizing:{tag}*")]
            if keys:
                await rclient.delete(*keys)
        await rclient.aclose()
        await engine.dispose()
        await builds.dispose()
        server.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def _reads(views: list[Any]) -> Counter[str]:
    """Reads by status, and builds, of every instance's view so far."""
    snaps = [v.snapshot() for v in views]
    out = Counter({s: sum(x.reads.get(s, 0) for x in snaps) for s in ("hit", "miss")})
    out["builds"] = sum(sum(x.builds.values()) for x in snaps)
    out["from_redis"] = sum(x.shared_hits for x in snaps)
    return out


def _published(keepers: list[Keeper]) -> int:
    """Messages the instances' buses published so far (a ``PUBLISH`` or a ``NOTIFY`` each)."""
    snaps = [k.bus.snapshot() for k in keepers]
    return sum(s.published for s in snaps if isinstance(s, RemoteBusSnapshot))


def per(phase: dict[str, Any], scale: float) -> dict[str, float]:
    """A phase's figures per second, times ``scale``: per 1,000 writes/s or 10,000 reads/s."""
    s = phase["seconds"]
    out = {f"redis {k}/s": v / s * scale for k, v in phase["redis_commands"].items()}
    out |= {f"pg {k}/s": v / s * scale for k, v in phase["pg_statements"].items()}
    out[f"{phase['bus']} bus messages/s"] = phase["bus_published"] / s * scale
    out["redis CPU %"] = phase["redis_cpu_s"] / s * 100 * scale
    if phase["pg_backend_cpu_s"] is not None:
        out["pg backends CPU %"] = phase["pg_backend_cpu_s"] / s * 100 * scale
    return {k: round(v, 1) for k, v in out.items()}


def report(result: dict[str, Any]) -> str:
    lines = [
        f"machine: {result['machine']}; Redis: {result['redis']}; "
        f"bus: {result['bus']}; instances: {result['instances']}; "
        f"resync_interval: {result['resync_interval']} s",
        "",
    ]
    for name, phase in result["phases"].items():
        if name == "hits":
            rate, unit = phase["reads_per_s"], 10_000
        else:
            rate, unit = phase["writes_per_s"], 1_000
        what = "reads/s" if name == "hits" else "writes/s"
        lines.append(
            f"## {name}: {phase['writes_per_s']} writes/s, {phase['reads_per_s']} reads/s "
            f"for {phase['seconds']} s; reads {phase['reads']}"
        )
        lines.append(f"| per {unit:,} {what} (scaled from the measured rate) | value |")
        lines.append("|---|---|")
        for k, v in per(phase, unit / rate if rate else 0.0).items():
            lines.append(f"| {k} | {v:,} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--writes", type=float, default=200.0, help="writes per second")
    parser.add_argument("--reads", type=float, default=5000.0, help="reads per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--instances", type=int, default=2, help="keepers sharing Redis")
    parser.add_argument(
        "--bus", choices=("redis", "postgres"), default="redis", help="Redis pub/sub or NOTIFY"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    result = asyncio.run(run(args.writes, args.reads, args.seconds, args.instances, args.bus))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))


if __name__ == "__main__":
    main()
