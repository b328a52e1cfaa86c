"""Library level: the cost of one read in one process, in ns/op, side by side in one run.

Hits: a plain dict lookup, an ``await`` of a coroutine returning a dict, a hit on the hub's
summary view (``await view.get()``, and the argument-free ``await view.read()``), and the
memory backends of dogpile.cache, aiocache and cashews (benchmark-only dependencies: a peer
that is not installed is skipped with a note) holding the same bytes.
Each is timed in loops of ``n`` operations (``n`` calibrated so a loop lasts ``round_s``),
``rounds`` times, interleaved, with the garbage collector off; the figures include the loop's
own overhead (the ``empty loop`` row). Beside them, in the same rounds: hits of the summary's
sections under ``Policy.swr(30)`` with and without ``max_age=300``, and the revision probes
of :mod:`freshkeep.bench.probes` (a SQLite file's data version check against the counter
``SELECT``; reads under ``probe="always"``).

Reads that do work, on the hub's summary, each timed alone: a stale read (a change learned
from another instance, served stale while one background refresh runs), a section rebuild
(a local commit to ``progress_events`` or ``decisions``, rebuilt in line) and a miss; and a
revision probe right after a commit to the file, with and without the data version check.
"""

from __future__ import annotations

import gc
import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from freshkeep.bench import probes
from freshkeep.bench.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from freshkeep.demo.hub import Hub

LoopFn = Callable[[int], Awaitable[int]]
"""``await loop(n)`` runs ``n`` operations and returns the elapsed ns."""


@dataclass
class CaseResult:
    """The samples (ns per operation) of one measured case."""

    name: str
    label: str
    kind: str
    """``hit`` (timed in loops) or ``work`` (each operation timed alone)."""
    samples: list[float] = field(default_factory=list)
    ops_per_sample: int = 1
    statuses: dict[str, int] = field(default_factory=dict)
    note: str = ""
    group: str = "read"
    """``read`` (reads of a view, and the references) or ``probe`` (reads of revisions)."""

    def summary(self) -> dict[str, Any]:
        """Median, quartiles and range of the samples, with the raw samples."""
        s = sorted(self.samples)
        q = statistics.quantiles(s, n=4) if len(s) > 1 else [s[0], s[0], s[0]] if s else [0.0] * 3
        return {
            "name": self.name,
            "label": self.label,
            "kind": self.kind,
            "group": self.group,
            "median_ns": statistics.median(s) if s else 0.0,
            "q1_ns": q[0],
            "q3_ns": q[2],
            "min_ns": s[0] if s else 0.0,
            "max_ns": s[-1] if s else 0.0,
            "n_samples": len(s),
            "ops_per_sample": self.ops_per_sample,
            "statuses": self.statuses,
            "note": self.note,
            "samples_ns": [round(x, 2) for x in self.samples],
        }


@dataclass
class LibraryConfig:
    """How much the library level measures."""

    seed_tasks: int = 10_000
    rounds: int = 15
    round_s: float = 0.05
    stale_samples: int = 100
    section_samples: int = 20
    miss_samples: int = 10
    probe_samples: int = 200
    """Reads of revisions right after a commit, per case (``probe_changed*``)."""


async def _calibrate(fn: LoopFn, round_s: float) -> int:
    n = 100
    while True:
        elapsed = await fn(n)
        if elapsed >= round_s * 1e9 * 0.2 or n >= 10_000_000:
            return max(100, int(n * round_s * 1e9 / max(elapsed, 1)))
        n *= 10


def _peer(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


async def _hit_loops(view: Any, body: bytes, notes: list[str]) -> dict[str, tuple[str, LoopFn]]:
    """The hit cases: name -> (label, loop)."""
    value = {"summary": body}
    key = "summary"
    loops: dict[str, tuple[str, LoopFn]] = {}

    async def empty(n: int) -> int:
        t = time.perf_counter_ns()
        for _ in range(n):
            pass
        return time.perf_counter_ns() - t

    async def dict_get(n: int) -> int:
        d = value
        t = time.perf_counter_ns()
        for _ in range(n):
            d[key]
        return time.perf_counter_ns() - t

    async def coro() -> dict[str, bytes]:
        return value

    async def await_value(n: int) -> int:
        t = time.perf_counter_ns()
        for _ in range(n):
            await coro()
        return time.perf_counter_ns() - t

    get, read = view.get, view.read

    async def freshkeep_hit(n: int) -> int:
        t = time.perf_counter_ns()
        for _ in range(n):
            await get()
        return time.perf_counter_ns() - t

    async def freshkeep_read(n: int) -> int:
        t = time.perf_counter_ns()
        for _ in range(n):
            await read()
        return time.perf_counter_ns() - t

    loops["empty"] = ("empty loop (overhead in every row)", empty)
    loops["dict"] = ("plain dict lookup `d[k]`", dict_get)
    loops["await"] = ("`await` of a coroutine returning a dict", await_value)
    loops["freshkeep"] = ("freshkeep view hit `await view.get()`", freshkeep_hit)
    loops["freshkeep_read"] = ("freshkeep view hit `await view.read()`", freshkeep_read)

    dogpile = _peer("dogpile.cache")
    if dogpile is not None:
        region = dogpile.make_region().configure("dogpile.cache.memory", expiration_time=3600)
        region.set(key, body)
        assert region.get(key) == body

        async def dogpile_get(n: int) -> int:
            rget = region.get
            t = time.perf_counter_ns()
            for _ in range(n):
                rget(key)
            return time.perf_counter_ns() - t

        loops["dogpile"] = ("dogpile.cache memory `region.get(k)` (sync)", dogpile_get)
    else:
        notes.append("dogpile.cache is not installed: skipped (pip install 'freshkeep[bench]')")

    aiocache = _peer("aiocache")
    if aiocache is not None:
        ac = aiocache.Cache(aiocache.Cache.MEMORY)
        await ac.set(key, body, ttl=3600)
        assert await ac.get(key) == body

        async def aiocache_get(n: int) -> int:
            aget = ac.get
            t = time.perf_counter_ns()
            for _ in range(n):
                await aget(key)
            return time.perf_counter_ns() - t

        loops["aiocache"] = ("aiocache SimpleMemoryCache `await get(k)`", aiocache_get)
    else:
        notes.append("aiocache is not installed: skipped (pip install 'freshkeep[bench]')")

    cashews = _peer("cashews")
    if cashews is not None:
        for name, check_repr in (("cashews", True), ("cashews_norepr", False)):
            cache = cashews.Cache()
            cache.setup("mem://", check_repr=check_repr)
            await cache.set(key, body, expire=3600)
            assert await cache.get(key) == body
            label = "cashews mem:// `get(k)`" + (
                " (defaults)" if check_repr else " (check_repr=False)"
            )
            loops[name] = (label, _cashews_loop(cache, key))
    else:
        notes.append("cashews is not installed: skipped (pip install 'freshkeep[bench]')")
    return loops


def _cashews_loop(cache: Any, key: str) -> LoopFn:
    async def cashews_get(n: int) -> int:
        cget = cache.get
        t = time.perf_counter_ns()
        for _ in range(n):
            await cget(key)
        return time.perf_counter_ns() - t

    return cashews_get


async def run_library(
    config: LibraryConfig, reporter: Reporter | None = None, workdir: str | None = None
) -> dict[str, Any]:
    """Run the library level; return its figures (see :meth:`CaseResult.summary`)."""
    from freshkeep.demo.app import get_hub, hub_app

    rep = reporter if reporter is not None else NullReporter()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rep.stage(f"library: seeding a hub of {config.seed_tasks:,} tasks", 1)
        async with hub_app(os.path.join(tmp, "bench.db"), seed_tasks=config.seed_tasks) as app:
            hub = get_hub(app)
            view = hub.summary
            first = await view.get()
            body = first.body
            extra = await probes.setup(hub)
            try:
                return await _measure(config, rep, hub, body, extra, notes)
            finally:
                await extra.aclose()


async def _measure(
    config: LibraryConfig,
    rep: Reporter,
    hub: Hub,
    body: bytes,
    extra: probes.Probes,
    notes: list[str],
) -> dict[str, Any]:
    from freshkeep.demo.models import Decision, ProgressEvent, utcnow

    view = hub.summary
    loops: dict[str, probes.Loop] = {}
    for name, (label, fn) in (await _hit_loops(view, body, notes)).items():
        loops[name] = probes.Loop(label, "hit", "read", fn)
        if name == "freshkeep_read":  # the same hit under other policies, next to it
            loops.update({k: v for k, v in extra.loops.items() if v.group == "read"})
    loops.update({k: v for k, v in extra.loops.items() if v.group != "read"})
    rep.advance()
    results = {
        name: CaseResult(name, loop.label, loop.kind, group=loop.group)
        for name, loop in loops.items()
    }
    rep.stage("library: calibrating the hit and probe loops", len(loops))
    sizes: dict[str, int] = {}
    for name, loop in loops.items():
        sizes[name] = await _calibrate(loop.fn, config.round_s)
        results[name].ops_per_sample = sizes[name]
        rep.advance()
    before = {name: loop.counters() for name, loop in loops.items() if loop.counters}
    rep.stage(f"library: {config.rounds} rounds of hits and probes", config.rounds)
    for _ in range(config.rounds):
        for name, loop in loops.items():
            gc.disable()
            try:
                elapsed = await loop.fn(sizes[name])
            finally:
                gc.enable()
            results[name].samples.append(elapsed / sizes[name])
        rep.advance()
    for name, counted in before.items():
        counters = loops[name].counters
        assert counters is not None
        after = counters()
        results[name].statuses = {k: after[k] - counted[k] for k in after}
    stats = (await view.get()).status
    if stats != "hit":
        notes.append(f"the summary read after the hit rounds was {stats!r}, not a hit")

    revisions = hub.keeper.revisions
    tracker = hub.keeper.tracker

    async def remote_change() -> None:
        # Another instance committed to decisions; the bus delivered it. (The
        # progress tail is strict: a change there is rebuilt in line, never stale.)
        assert revisions is not None
        bumped = await revisions.bump(["table:decisions"])
        assert bumped is not None
        tracker.apply(bumped)

    async def local_progress() -> None:
        async with hub.sessionmaker() as s:
            s.add(
                ProgressEvent(
                    topic_id=1,
                    event_type="note",
                    summary="bench",
                    author="bench",
                    created_at=utcnow(),
                )
            )
            await hub.exports.before_commit(s)  # as the hub's API commits a write
            await s.commit()

    async def local_decision() -> None:
        view.apply_deltas = True
        async with hub.sessionmaker() as s:
            s.add(Decision(topic_id=1, title="bench", status="open", blocking=False))
            await hub.exports.before_commit(s)
            await s.commit()

    async def local_decision_rebuilt() -> None:
        await local_decision()
        view.apply_deltas = False  # the same commit, the section rebuilt as without deltas

    async def invalidate() -> None:
        view.apply_deltas = True
        view.invalidate()

    work = [
        (
            "stale",
            "stale read (change from another instance)",
            remote_change,
            "stale",
            config.stale_samples,
        ),
        (
            "section_progress",
            "section rebuild in line: `progress` (local commit)",
            local_progress,
            "section",
            config.section_samples,
        ),
        (
            "section_core",
            "section in line: `core` (local commit: delta)",
            local_decision,
            "section",
            config.section_samples,
        ),
        (
            "section_core_rebuild",
            "section rebuild in line: `core` (local commit)",
            local_decision_rebuilt,
            "section",
            config.section_samples,
        ),
        (
            "miss",
            "miss: full build of the summary",
            invalidate,
            "miss",
            config.miss_samples,
        ),
    ]
    for name, label, prepare, expect, count in work:
        case = results[name] = CaseResult(name, label, "work", note=f"expects {expect}")
        rep.stage(f"library: {label.split(' (')[0]}", count)
        for _ in range(count):
            await hub.keeper.wait_idle()
            await view.get()  # start from a current entry
            await prepare()
            t = time.perf_counter_ns()
            read = await view.get()
            case.samples.append(float(time.perf_counter_ns() - t))
            case.statuses[read.status] = case.statuses.get(read.status, 0) + 1
            rep.advance()
        await hub.keeper.wait_idle()
    rep.stage("library: revision probes after a commit", 1)
    for name, (label, samples, statuses) in (
        await probes.changed(extra, config.probe_samples)
    ).items():
        results[name] = CaseResult(
            name, label, "work", samples, statuses=statuses, group="probe", note="expects queried"
        )
    rep.advance()
    cases = [r.summary() for r in results.values()]
    return {
        "seed_tasks": config.seed_tasks,
        "body_bytes": len(body),
        "rounds": config.rounds,
        "round_s": config.round_s,
        "sources": len(extra.sources),
        "cases": cases,
        "ratios": probes.ratios(cases),
        "notes": notes,
    }
