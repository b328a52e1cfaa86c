"""Scale level: what a write costs the hub's summary as the data grows.

``freshkeep bench --level scale --seed-tasks 1000000`` seeds a hub (SQLite file, bulk inserts)
and measures, one process:

- seeding: seconds, and the database file's size;
- miss: a full build of the summary (both sections), each timed alone;
- the first read after a local core write (an ORM insert of a decision, as ``POST
  /decisions`` does, the export prebuild it enqueues run to its end, and the revisions read,
  so that the periodic resync is not in the read timed), side by side: the
  ``core`` section brought up to date by applying the commit's changed rows (a delta), and
  rebuilt (``view.apply_deltas = False``);
- black box, the same through the hub's HTTP API (in process, ASGI): ``POST /decisions``, then
  the ``GET /state/summary`` right after it timed, with deltas and without;
- resident memory: after seeding, and its peak.

Every read is timed alone; the figures are medians, the spread is in results.json.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from freshkeep.bench.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from freshkeep.demo.hub import Hub


@dataclass
class ScaleConfig:
    """How much the scale level measures."""

    seed_tasks: int = 1_000_000
    samples: int = 20
    """Reads timed after a write with deltas (in the library, and through HTTP)."""
    rebuild_samples: int = 5
    """Reads timed after a write without deltas (each a rebuild of the core)."""
    miss_samples: int = 3
    database: str | None = None
    """A SQLite file to run on: seeded when it holds no data, and kept, so that another run
    skips the seeding (each run adds its writes to it). Default: a temporary file."""


def rss_mib() -> float | None:
    """This process's resident memory now, in MiB (``None`` where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident memory, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stats(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * 1e3,
        "min_ms": ordered[0] * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "p90_ms": ordered[max(0, -(-9 * len(ordered) // 10) - 1)] * 1e3,
    }


async def _timed(
    count: int,
    prepare: Callable[[], Awaitable[None]],
    read: Callable[[], Awaitable[tuple[str, str | None]]],
    rep: Reporter,
) -> dict[str, Any]:
    samples: list[float] = []
    statuses: dict[str, int] = {}
    for _ in range(count):
        await prepare()
        t = time.perf_counter()
        status, reason = await read()
        samples.append(time.perf_counter() - t)
        label = status if reason is None else f"{status} ({reason})"
        statuses[label] = statuses.get(label, 0) + 1
        rep.advance()
    return _stats(samples) | {"statuses": statuses}


async def run_scale(
    config: ScaleConfig, reporter: Reporter | None = None, workdir: str | None = None
) -> dict[str, Any]:
    """Run the scale level; return its figures."""
    import httpx

    from freshkeep.demo.app import get_hub, hub_app

    rep = reporter if reporter is not None else NullReporter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = config.database or os.path.join(tmp, "scale.db")
        rep.stage(f"scale: seeding a hub of {config.seed_tasks:,} tasks", 1)
        started = time.perf_counter()
        async with hub_app(path, seed_tasks=config.seed_tasks) as app:
            start_s = time.perf_counter() - started
            hub = get_hub(app)
            report = hub.seed_report
            seeded = report is None or report.seeded
            out: dict[str, Any] = {
                "seed_tasks": config.seed_tasks,
                "seeded": seeded,
                "seeding_s": report.seconds if report is not None and seeded else start_s,
                "start_s": start_s,
                "rows": sum(report.counts.values()) if report is not None else 0,
                "db_mib": sum(
                    os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)
                )
                / 2**20,
                "rss_after_seed_mib": rss_mib(),
            }
            rep.advance()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
                out.update(await _measure(config, hub, http, rep))
            out["rss_mib"] = rss_mib()
            out["peak_rss_mib"] = peak_rss_mib()
            out["body_bytes"] = len((await hub.summary.get()).body)
    return out


async def _measure(
    config: ScaleConfig, hub: Hub, http: Any, rep: Reporter
) -> dict[str, dict[str, Any]]:
    from freshkeep.demo.models import Decision

    view = hub.summary

    applied: list[float] = []

    async def read() -> tuple[str, str | None]:
        r = await view.get()
        if r.reason == "delta":
            applied.append(view.stats.delta_seconds["core"])
        return r.status, r.reason

    async def invalidate() -> None:
        await hub.keeper.wait_idle()
        await view.get()
        view.invalidate()

    async def decision() -> None:
        await hub.keeper.wait_idle()
        await view.get()  # start from a current entry
        async with hub.sessionmaker() as s:
            s.add(Decision(topic_id=1, title="bench", status="open", blocking=True))
            await hub.exports.before_commit(s)  # as the hub's API commits a write
            await s.commit()
        # The commit's export prebuild runs in this process too: let it end, and read the
        # revisions now, so that the read timed is the write's work alone, not the job's nor
        # the periodic resync's (the HTTP rows below do neither).
        await hub.exports.queue.drain()
        await hub.keeper.tracker.resync()

    async def post() -> None:
        await hub.keeper.wait_idle()
        await http.get("/state/summary")
        r = await http.post("/decisions", json={"topic_id": 1, "title": "bench", "blocking": True})
        assert r.status_code == 201, r.text

    async def get() -> tuple[str, str | None]:
        r = await http.get("/state/summary")
        assert r.status_code == 200, r.text
        return r.headers.get("x-freshkeep-cache", "?"), r.headers.get("x-freshkeep-reason")

    out: dict[str, dict[str, Any]] = {}
    rep.stage("scale: full builds of the summary", config.miss_samples)
    out["miss"] = await _timed(config.miss_samples, invalidate, read, rep)
    for deltas in (True, False):
        view.apply_deltas = deltas
        name = "delta" if deltas else "rebuild"
        count = config.samples if deltas else config.rebuild_samples
        rep.stage(f"scale: the read after a core write ({name})", count)
        out[name] = await _timed(count, decision, read, rep)
        if deltas and applied:
            out["apply"] = _stats(applied)
        rep.stage(f"scale: GET after POST /decisions ({name})", count)
        out[f"http_{name}"] = await _timed(count, post, get, rep)
    view.apply_deltas = True
    return out


def markdown(s: dict[str, Any]) -> list[str]:
    """The scale level's section of the report."""

    def ms(case: str) -> str:
        c = s[case]
        return f"{c['median_ms']:,.2f} ms (p90 {c['p90_ms']:,.2f}, n={c['n']})"

    def ratio(num: str, den: str) -> str:
        return f"{s[num]['median_ms'] / s[den]['median_ms']:,.0f}x"

    rss = s.get("rss_after_seed_mib")
    memory = f"after seeding {rss:,.0f} MiB, " if rss is not None else ""
    seeded = (
        f"Seeded {s['rows']:,} rows in {s['seeding_s']:,.1f} s"
        if s.get("seeded", True)
        else f"Reused a seeded database (started in {s['start_s']:,.1f} s)"
    )
    intro = (
        f"{seeded} (SQLite file "
        f"{s['db_mib']:,.0f} MiB); summary body {s['body_bytes']:,} bytes. Resident memory: "
        f"{memory}peak {s['peak_rss_mib']:,.0f} MiB. Each read timed alone, after its write."
    )
    return [
        f"## Scale: the summary at {s['seed_tasks']:,} tasks",
        "",
        textwrap.fill(intro, width=100, break_long_words=False),
        "",
        "| read | median | statuses |",
        "|---|---:|---|",
        f"| miss: full build of the summary | {ms('miss')} | {_statuses(s['miss'])} |",
        f"| after a core write: delta | {ms('delta')} | {_statuses(s['delta'])} |",
        f"| after a core write: rebuild | {ms('rebuild')} | {_statuses(s['rebuild'])} |",
        f"| GET after POST /decisions: delta | {ms('http_delta')} | {_statuses(s['http_delta'])} |",
        f"| GET after POST /decisions: rebuild | {ms('http_rebuild')} "
        f"| {_statuses(s['http_rebuild'])} |",
        "",
        textwrap.fill(
            f"Rebuild / delta: {ratio('rebuild', 'delta')} in the library, "
            f"{ratio('http_rebuild', 'http_delta')} through HTTP."
            + (
                f" Of the delta's read, `apply` and encoding: {ms('apply')}."
                if "apply" in s
                else ""
            ),
            width=100,
            break_long_words=False,
        ),
        "",
    ]


def _statuses(case: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(case["statuses"].items()))


def targets(s: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The scale level's target: the first read after a core write within 1 ms."""
    if not s:
        return []
    med = s["delta"]["median_ms"]
    return [
        {
            "target": f"read after a core write ≤ 1 ms at {s['seed_tasks']:,} tasks",
            "measured": f"{med:,.2f} ms (rebuild: {s['rebuild']['median_ms']:,.1f} ms)",
            "met": med <= 1.0,
        }
    ]
