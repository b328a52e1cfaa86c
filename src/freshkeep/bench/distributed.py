"""Distributed level: two hub processes on one PostgreSQL database with a Redis store and bus.

Only run when asked (``freshkeep bench --level distributed``): it needs psycopg2, the
``postgres`` and ``redis`` extras, a PostgreSQL server
(``FRESHKEEP_BENCH_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``; a
fresh database ``fk_bench_<hex>`` is created on it and dropped at the end) and a Redis server
(``FRESHKEEP_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/15``; a unique key prefix and
bus channel, whose keys are deleted at the end).

Two figures: the read load of the service level against ``/state/summary`` of both hubs (the
connections split between them, one load generator process per hub), and the cross-process
invalidation latency: writes posted to hub A, each timed from A's ``201`` until hub B first
serves a summary that contains it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from freshkeep.bench.loadgen import observe, percentiles
from freshkeep.bench.progress import NullReporter, Reporter

POSTGRES_URL = os.environ.get(
    "FRESHKEEP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FRESHKEEP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
SECRET = "freshkeep-bench-secret"


@dataclass
class DistributedConfig:
    """How much the distributed level measures."""

    seed_tasks: int = 10_000
    read_s: float = 5.0
    warmup_s: float = 0.5
    connections: int = 16
    writes: int = 50
    write_timeout_s: float = 10.0
    resync_interval_s: float = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Hub:
    def __init__(self, name: str, db_url: str, env: dict[str, str], seed: int, tmp: str) -> None:
        self.name = name
        self.port = _free_port()
        self.log_path = os.path.join(tmp, f"hub-{name}.log")
        cmd = [sys.executable, "-m", "freshkeep.cli", "demo"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--db", db_url]
        cmd += ["--seed-tasks", str(seed), "--log-level", "warning"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def tail(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read()[-2000:].decode(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub {self.name} exited: {self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/state/summary")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"hub {self.name} did not answer in {timeout:g} s: {self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _admin() -> tuple[Any, str, int, str]:
    import psycopg2  # type: ignore[import-untyped]

    parts = urlsplit(POSTGRES_URL.replace("+asyncpg", "").replace("+psycopg2", ""))
    host, port, user = parts.hostname or "127.0.0.1", parts.port or 5432, parts.username
    conn = psycopg2.connect(
        host=host, port=port, user=user or "postgres", dbname=parts.path.lstrip("/") or "postgres"
    )
    conn.autocommit = True
    return conn, host, port, user or "postgres"


def _clear_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _loadgens(
    hubs: list[_Hub], config: DistributedConfig, tmp: str, reporter: Reporter
) -> list[dict[str, Any]]:
    procs: list[tuple[subprocess.Popen[bytes], str, str, Any]] = []
    per_hub = [config.connections // len(hubs)] * len(hubs)
    per_hub[0] += config.connections - sum(per_hub)
    total = config.warmup_s + config.read_s
    try:
        for hub, conns in zip(hubs, per_hub, strict=True):
            out = os.path.join(tmp, f"read-{hub.name}.json")
            log_path = os.path.join(tmp, f"read-{hub.name}.log")
            cmd = [sys.executable, "-m", "freshkeep.bench.loadgen", "--port", str(hub.port)]
            cmd += ["--path", "/state/summary", "--connections", str(conns)]
            cmd += ["--warmup", str(config.warmup_s), "--duration", str(config.read_s)]
            cmd += ["--out", out]
            log = open(log_path, "wb")  # closed below
            procs.append(
                (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), out, log_path, log)
            )
        started = time.monotonic()
        shown = 0.0
        while any(p.poll() is None for p, *_ in procs):
            time.sleep(0.1)
            elapsed = min(time.monotonic() - started, total)
            reporter.advance(elapsed - shown)
            shown = elapsed
            if time.monotonic() - started > total + 60.0:
                break
        reporter.advance(total - shown)
    finally:
        for p, _, _, log in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            log.close()
    results = []
    for p, out, log_path, _ in procs:
        if p.returncode != 0 or not os.path.exists(out):
            with open(log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"the load generator failed: {tail}")
        with open(out, "rb") as f:
            results.append(json.load(f))
    return results


def _invalidation(
    a: _Hub, b: _Hub, config: DistributedConfig, reporter: Reporter
) -> dict[str, Any]:
    ca = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    cb = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    latencies: list[float] = []
    polls: list[int] = []
    write_ms: list[float] = []
    timeouts = 0
    try:
        for k in range(config.writes):
            body = json.dumps(
                {"topic_id": 1, "event_type": "note", "summary": f"bench dist {k}", "author": "b"}
            )
            t0 = time.perf_counter()
            ca.request("POST", "/progress", body, {"Content-Type": "application/json"})
            resp = ca.getresponse()
            data = resp.read()
            acked = time.perf_counter()
            if resp.status != 201:
                raise RuntimeError(f"POST /progress to hub A: {resp.status} {data[:200]!r}")
            write_ms.append((acked - t0) * 1000)
            event_id = int(json.loads(data)["id"])
            n = 0
            while True:
                cb.request("GET", "/state/summary")
                r = cb.getresponse()
                seen = observe(r.read())
                n += 1
                now = time.perf_counter()
                if r.status == 200 and seen is not None and seen[0] >= event_id:
                    latencies.append((now - acked) * 1000)
                    polls.append(n)
                    break
                if now - acked > config.write_timeout_s:
                    timeouts += 1
                    break
            reporter.advance()
            time.sleep(0.02)  # let the writes not run into each other
    finally:
        ca.close()
        cb.close()
    return {
        "writes": config.writes,
        "seen": len(latencies),
        "timeouts": timeouts,
        "timeout_s": config.write_timeout_s,
        "latency_ms": percentiles(latencies),
        "polls": percentiles([float(x) for x in polls]),
        "write_latency_ms": percentiles(write_ms),
    }


def run_distributed(
    config: DistributedConfig, reporter: Reporter | None = None, workdir: str | None = None
) -> dict[str, Any]:
    """Run the distributed level; return its figures."""
    rep = reporter if reporter is not None else NullReporter()
    try:
        import psycopg2  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            f"the distributed level needs {exc.name} (pip install psycopg2-binary "
            "'freshkeep[postgres,redis]')"
        ) from exc
    tag = uuid.uuid4().hex[:12]
    name, prefix, channel = f"fk_bench_{tag}", f"fk-bench:{tag}:", f"fk_bench_{tag}"
    admin, host, port, user = _admin()
    hubs: list[_Hub] = []
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            db_url = f"postgresql+asyncpg://{user}@{host}:{port}/{name}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHKEEP_")}
            env |= {
                "FRESHKEEP_STORE_URL": REDIS_URL,
                "FRESHKEEP_STORE_SECRET": SECRET,
                "FRESHKEEP_STORE_PREFIX": prefix,
                "FRESHKEEP_BUS_URL": REDIS_URL,
                "FRESHKEEP_BUS_CHANNEL": channel,
                "FRESHKEEP_RESYNC_INTERVAL": str(config.resync_interval_s),
                "NO_COLOR": "1",
                "TERM": "dumb",
                "COLUMNS": "200",
            }
            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                try:
                    rep.stage(
                        f"distributed: starting two hubs ({config.seed_tasks:,} tasks) on "
                        "PostgreSQL + Redis",
                        2,
                    )
                    # A seeds the empty database; B starts on the seeded one.
                    hubs.append(_Hub("A", db_url, env, config.seed_tasks, tmp))
                    hubs[0].wait_ready(timeout=300.0)
                    rep.advance()
                    hubs.append(_Hub("B", db_url, env, config.seed_tasks, tmp))
                    hubs[1].wait_ready(timeout=120.0)
                    rep.advance()
                    rep.stage(
                        "distributed: read load on both hubs", config.warmup_s + config.read_s
                    )
                    reads = _loadgens(hubs, config, tmp, rep)
                    rep.stage(f"distributed: {config.writes} writes to A, seen by B", config.writes)
                    inval = _invalidation(hubs[0], hubs[1], config, rep)
                finally:
                    for hub in hubs:
                        hub.stop()
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _clear_prefix(prefix)
    finally:
        admin.close()
    rps = sum(float(r["rps"]) for r in reads)
    return {
        "seed_tasks": config.seed_tasks,
        "read_s": config.read_s,
        "warmup_s": config.warmup_s,
        "connections": config.connections,
        "resync_interval_s": config.resync_interval_s,
        "store": "redis",
        "bus": "redis",
        "read": {
            "rps": rps,
            "requests": sum(int(r["requests"]) for r in reads),
            "errors": sum(int(r["errors"]) for r in reads),
            "hubs": {hub.name: r for hub, r in zip(hubs, reads, strict=True)},
        },
        "invalidation": inval,
    }
