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
serves a summary that contains it, with its parts (:data:`PARTS`: the bus delivery and the
rebuild as B reports them, the read that showed it and the reads before it). It is measured
twice, side by side in one run (:data:`MODES`): with B rebuilding at its next read (the
default), then with B restarted with ``FRESHKEEP_REFRESH_ON_PUSH=true``.
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
    writes: int = 200
    """Writes per invalidation mode (at 200 the p99 is the second largest, not the max)."""
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


INVALIDATION_TARGET_MS = 5.0
"""The target: a write on one hub served by the other within 5 ms at p99, on loopback."""

MODES = {
    "on_read": ("B rebuilds at its next read (default)", {}),
    "on_push": (
        "B rebuilds when the message arrives (`FRESHKEEP_REFRESH_ON_PUSH=true`)",
        {"FRESHKEEP_REFRESH_ON_PUSH": "true"},
    ),
}
"""How hub B is run for each invalidation phase: label and extra environment."""

PARTS = (
    ("delivery_ms", "bus delivery: A's publish → B's listener"),
    ("rebuild_ms", "rebuild on B: the changed section's builder (when it was rebuilt)"),
    ("apply_ms", "delta on B: A's changed rows applied to the section (when they were)"),
    ("read_ms", "the read of B that showed it (waits for the rebuild)"),
    ("polling_ms", "reads of B before it (polling)"),
)
"""The parts of the latency reported beside it: key and label."""


def _get_json(conn: http.client.HTTPConnection, path: str) -> dict[str, Any]:
    conn.request("GET", path)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status} {data[:200]!r}")
    result: dict[str, Any] = json.loads(data)
    return result


def _built(stats: dict[str, Any], section: str) -> tuple[int, float]:
    """How many times hub B built ``section`` of its summary, and the last build's seconds."""
    view = stats["views"]["summary"]
    return int(view["builds"].get(section, 0)), float(view["build_seconds"].get(section, 0.0))


def _applied(stats: dict[str, Any], section: str) -> tuple[int, float]:
    """How many times hub B applied changes to ``section`` (a delta), and the last's seconds."""
    view = stats["views"]["summary"]
    deltas, seconds = view.get("deltas") or {}, view.get("delta_seconds") or {}
    return int(deltas.get(section, 0)), float(seconds.get(section, 0.0))


def _invalidation(
    a: _Hub, b: _Hub, config: DistributedConfig, reporter: Reporter
) -> dict[str, Any]:
    ca = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    cb = http.client.HTTPConnection("127.0.0.1", b.port, timeout=10)
    samples: dict[str, list[float]] = {"latency_ms": [], "write_ms": []}
    samples |= {key: [] for key, _ in PARTS}
    polls: list[int] = []
    timeouts = adopted = rebuilt = applied = 0
    try:
        first = _get_json(cb, "/state/stats")
        builds, _ = _built(first, "progress")
        deltas, _ = _applied(first, "progress")
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
            samples["write_ms"].append((acked - t0) * 1000)
            event_id = int(json.loads(data)["id"])
            n = 0
            while True:
                sent = time.perf_counter()
                cb.request("GET", "/state/summary")
                r = cb.getresponse()
                seen = observe(r.read())
                n += 1
                now = time.perf_counter()
                if r.status == 200 and seen is not None and seen[0] >= event_id:
                    samples["latency_ms"].append((now - acked) * 1000)
                    samples["read_ms"].append((now - sent) * 1000)
                    samples["polling_ms"].append((sent - acked) * 1000)
                    polls.append(n)
                    break
                if now - acked > config.write_timeout_s:
                    timeouts += 1
                    break
            # B's own account, read after the write was seen: the last message's delivery and
            # the build of the section it moved (none when B took another instance's build).
            stats = _get_json(cb, "/state/stats")
            delivery = stats["bus"].get("last_delivery_ms")
            if delivery is not None:
                samples["delivery_ms"].append(float(delivery))
            now_builds, seconds = _built(stats, "progress")
            now_deltas, delta_s = _applied(stats, "progress")
            if now_builds > builds:
                samples["rebuild_ms"].append(seconds * 1000)
                rebuilt += 1
            elif now_deltas > deltas:
                samples["apply_ms"].append(delta_s * 1000)
                applied += 1
            else:
                adopted += 1
            builds, deltas = now_builds, now_deltas
            reporter.advance()
            time.sleep(0.02)  # let the writes not run into each other
    finally:
        ca.close()
        cb.close()
    return {
        "writes": config.writes,
        "seen": len(samples["latency_ms"]),
        "timeouts": timeouts,
        "timeout_s": config.write_timeout_s,
        "target_ms": INVALIDATION_TARGET_MS,
        "latency_ms": percentiles(samples["latency_ms"]),
        "polls": percentiles([float(x) for x in polls]),
        "write_latency_ms": percentiles(samples["write_ms"]),
        "parts": {key: percentiles(samples[key]) for key, _ in PARTS},
        "adopted": adopted,
        "rebuilt": rebuilt,
        "applied": applied,
        "samples_ms": {k: [round(x, 3) for x in v] for k, v in samples.items()},
    }


def targets(dist: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The invalidation target for each mode measured (the bench's ``targets`` rows)."""
    out: list[dict[str, Any]] = []
    for mode, inv in ((dist or {}).get("invalidation") or {}).items():
        if mode not in MODES or not inv.get("seen"):
            continue
        p99 = inv["latency_ms"]["p99"]
        out.append(
            {
                "target": f"write on A served by B, p99 < {inv['target_ms']:g} ms ({mode})",
                "measured": f"{p99:.2f} ms (p50 {inv['latency_ms']['p50']:.2f} ms)",
                "met": p99 < inv["target_ms"] and not inv["timeouts"],
            }
        )
    return out


def invalidation_lines(dist: dict[str, Any]) -> list[str]:
    """The report's invalidation table: each mode's latency beside its parts."""
    modes = {m: inv for m, inv in (dist.get("invalidation") or {}).items() if m in MODES}
    if not modes:
        return []
    first = next(iter(modes.values()))
    lines = [
        "### Invalidation across processes",
        "",
        f"{first['writes']} writes (`POST /progress`) to hub A per mode, each timed from A's",
        "`201` until hub B first serves a summary that contains it (B polled back to back).",
        "Parts, from B's `/state/stats` after each write: the last message's delivery (by",
        "the two processes' clocks; A publishes inside its commit, before its `201`) and the",
        "section's build, or its delta when the message carried A's changed rows; from the",
        "client: the read that showed it and the reads before.",
        f"Target: p99 < {first['target_ms']:g} ms.",
        "",
        "| mode | what | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|",
    ]
    for mode, inv in modes.items():
        a = inv["latency_ms"]
        how = ""
        if "applied" in inv:  # how B brought the section up to date
            how = f"; B applied {inv['applied']}, rebuilt {inv['rebuilt']}"
        lines.append(
            f"| {mode} | **A → B** ({inv['seen']} seen, {inv['timeouts']} timed out{how}) "
            f"| {a['p50']:.2f} | {a['p99']:.2f} | {a['max']:.2f} |"
        )
        for key, label in PARTS:
            q = inv["parts"].get(key)
            if q is None:  # a part results of an older run do not have
                continue
            lines.append(f"| | {label} | {q['p50']:.2f} | {q['p99']:.2f} | {q['max']:.2f} |")
        w = inv["write_latency_ms"]
        lines.append(
            f"| | A's `201` (the write) | {w['p50']:.2f} | {w['p99']:.2f} | {w['max']:.2f} |"
        )
    lines.append("")
    return lines


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
    names: list[str] = []
    inval: dict[str, Any] = {}
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
                    names = [h.name for h in hubs]
                    for mode, (_, extra) in MODES.items():
                        if extra:  # B again, on the same database, run another way
                            hubs[1].stop()
                            hubs[1] = _Hub("B", db_url, env | extra, config.seed_tasks, tmp)
                            hubs[1].wait_ready(timeout=120.0)
                        rep.stage(
                            f"distributed: {config.writes} writes to A, seen by B ({mode})",
                            config.writes,
                        )
                        inval[mode] = _invalidation(hubs[0], hubs[1], config, rep)
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
            "hubs": dict(zip(names, reads, strict=True)),
        },
        "modes": {mode: label for mode, (label, _) in MODES.items()},
        "invalidation": inval,
    }
