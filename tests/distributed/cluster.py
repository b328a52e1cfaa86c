"""Hubs as OS processes on one PostgreSQL database and one Redis, and a cuttable TCP proxy.

Every test gets its own database (``fk_dist_<hex>``), Redis key prefix and bus channel, so runs
never collide; :class:`Cluster` stops every hub it started, and the fixtures drop the database
and delete the prefix's keys.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from freshkeep.core.entry import parse_revision

RESYNC_INTERVAL = 1.0
"""``FRESHKEEP_RESYNC_INTERVAL`` of every hub."""
SLACK = 1.0
"""Seconds added to a bound for scheduling on a busy machine (a rebuild, the poll interval)."""
POLL = 0.005
"""Seconds between polls of a hub while waiting for a change to show."""
START_TIMEOUT = 60.0
"""Seconds a hub may take to answer its first ``/state/summary``."""
SECRET = "distributed-tests-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q) - 1]


@dataclass(frozen=True)
class Database:
    """A PostgreSQL database of one test."""

    name: str
    host: str
    port: int
    user: str

    def url(self, driver: str = "postgresql+asyncpg", *, port: int | None = None) -> str:
        return f"{driver}://{self.user}@{self.host}:{port or self.port}/{self.name}"

    def connect(self) -> Any:
        """A psycopg2 connection in autocommit, as ``psql`` would make."""
        import psycopg2  # type: ignore[import-untyped]

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=self.name)
        conn.autocommit = True
        return conn


@dataclass(frozen=True)
class Namespace:
    """The unique Redis key prefix and bus channel of one test."""

    prefix: str
    channel: str
    redis_url: str


class Hub:
    """One ``freshkeep demo`` process."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float = START_TIMEOUT) -> None:
        """Poll ``/state/summary`` until it answers 200 (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hub {self.name} exited:\n{self.output()}")
            try:
                r = await client.get(f"{self.base_url}/state/summary")
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            if r.status_code == 200:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"hub {self.name} not ready after {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
                self.proc.kill()
                self.proc.wait(timeout=15)


@dataclass
class Cluster:
    """Starts hubs on ``db`` with the test's namespace; :meth:`stop` ends them all."""

    db: Database
    ns: Namespace
    tmp: Path
    client: httpx.AsyncClient
    hubs: list[Hub] = field(default_factory=list)

    def env(
        self,
        *,
        bus: str = "redis",
        store_url: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment of a hub: ``bus`` is ``redis``, ``postgres``, ``local`` or a URL."""
        bus_url = {
            "redis": self.ns.redis_url,
            "postgres": self.db.url("postgresql"),
            "local": "local://",
        }.get(bus, bus)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHKEEP_")}
        env |= {
            "FRESHKEEP_STORE_URL": store_url or self.ns.redis_url,
            "FRESHKEEP_STORE_SECRET": SECRET,
            "FRESHKEEP_STORE_PREFIX": self.ns.prefix,
            "FRESHKEEP_BUS_URL": bus_url,
            "FRESHKEEP_BUS_CHANNEL": self.ns.channel,
            "FRESHKEEP_RESYNC_INTERVAL": str(RESYNC_INTERVAL),
            "FRESHKEEP_BUS_MAX_RECONNECT_BACKOFF": "1.0",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "COLUMNS": "200",
        }
        return env | dict(extra or {})

    async def start(
        self,
        *,
        seed_tasks: int = 0,
        bus: str = "redis",
        db_url: str | None = None,
        store_url: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Hub:
        """Start one hub and wait until it serves ``/state/summary``."""
        name = chr(ord("A") + len(self.hubs))
        port = free_port()
        log = self.tmp / f"hub-{name}.log"
        cmd = [sys.executable, "-m", "freshkeep.cli", "demo"]
        cmd += ["--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--db", db_url or self.db.url(), "--seed-tasks", str(seed_tasks)]
        cmd += ["--log-level", "warning"]
        env = self.env(bus=bus, store_url=store_url, extra=extra)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=self.tmp, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        hub = Hub(name, port, proc, log)
        self.hubs.append(hub)
        await hub.wait_ready(self.client)
        return hub

    def migrate(self, *args: str) -> str:
        """Run ``freshkeep migrate --db <this database> ARGS``; return its output."""
        cmd = [sys.executable, "-m", "freshkeep.cli", "migrate"]
        cmd += ["--db", self.db.url(), *args]  # the async URL the hubs use
        env = self.env()
        done = subprocess.run(
            cmd, cwd=self.tmp, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def stop(self) -> None:
        for hub in self.hubs:
            hub.stop()


# -- HTTP helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """A progress event posted to a hub, as acknowledged."""

    id: int
    created_at: str
    revision: int
    """Its ``table:progress_events`` revision (from ``X-Freshkeep-Revision``)."""
    token: str
    """The ``X-Freshkeep-Revision`` header: a causal token."""
    sent: float
    acked: float
    """``time.monotonic()`` when the 201 arrived."""


async def post_progress(
    client: httpx.AsyncClient, hub: Hub, summary: str, *, topic_id: int = 1
) -> Write:
    body = {"topic_id": topic_id, "event_type": "note", "summary": summary, "author": "dist"}
    sent = time.monotonic()
    r = await client.post(f"{hub.base_url}/progress", json=body)
    acked = time.monotonic()
    assert r.status_code == 201, (r.status_code, r.text)
    token = r.headers["x-freshkeep-revision"]
    rev = parse_revision(token)["table:progress_events"]
    assert isinstance(rev, int)
    data = r.json()
    return Write(data["id"], data["created_at"], rev, token, sent, acked)


async def summary(client: httpx.AsyncClient, hub: Hub, **kw: Any) -> httpx.Response:
    r = await client.get(f"{hub.base_url}/state/summary", **kw)
    assert r.status_code == 200, (hub.name, r.status_code, r.text)
    return r


async def wait_until_newest(
    client: httpx.AsyncClient,
    hub: Hub,
    event_id: int,
    *,
    since: float,
    timeout: float,
    newest: bool = True,
) -> float:
    """Poll ``hub`` until its summary's newest progress event is ``event_id`` (with ``newest``
    false: one of its recent events, for when others write concurrently); return the seconds
    from ``since`` (a ``time.monotonic()``) to the first read that served it."""
    deadline = since + timeout
    while True:
        r = await summary(client, hub)
        now = time.monotonic()
        recent = r.json()["recent_progress"]
        if recent and (
            recent[0]["id"] == event_id if newest else any(ev["id"] == event_id for ev in recent)
        ):
            return now - since
        if now > deadline:
            raise AssertionError(
                f"hub {hub.name} still did not serve event {event_id} {now - since:.3f}s after "
                f"it was acknowledged (cache status {r.headers.get('x-freshkeep-cache')}, "
                f"revision {r.headers.get('x-freshkeep-revision')}): {await diagnose(client, hub)}"
            )
        await asyncio.sleep(POLL)


async def diagnose(client: httpx.AsyncClient, hub: Hub) -> dict[str, Any]:
    """What a hub says about its revisions and its summary view, for failure messages."""
    s = await stats(client, hub)
    keys = ("probe", "probes", "probe_errors", "remote_revisions", "commits", "bus_down", "bus")
    view = s["views"]["summary"]
    return {k: s.get(k) for k in keys} | {
        "view": {k: view.get(k) for k in ("reads", "builds", "last_error", "in_flight")}
    }


async def stats(client: httpx.AsyncClient, hub: Hub) -> dict[str, Any]:
    r = await client.get(f"{hub.base_url}/state/stats")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def wait_for(what: str, check: Any, *, timeout: float, interval: float = 0.05) -> None:
    """Await ``check()`` until it returns true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout}s")
        await asyncio.sleep(interval)


def new_namespace(redis_url: str) -> Namespace:
    tag = uuid.uuid4().hex[:12]
    return Namespace(f"fk-dist:{tag}:", f"fk_dist_{tag}", redis_url)
