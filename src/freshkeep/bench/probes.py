"""Library level, revision probes: what learning revisions costs on a SQLite file.

:class:`SQLAlchemyRevisions` first looks at ``PRAGMA data_version`` (its own connection, no
table read) and answers from the revisions it read last when nothing committed since. These
cases measure, on the hub's database and the summary's sources, side by side in one run:

- ``probe_unchanged``: a read when nothing committed (the data version check only), in loops;
- ``probe_query``: the counter ``SELECT`` alone, as every read cost before the check
  (``skip_unchanged=False``), in loops;
- ``probe_changed`` and ``probe_changed_query``: a read right after a commit to the file by
  another connection (the check, then the ``SELECT``), and the ``SELECT`` alone after the same
  kind of commit; each read timed alone, the two alternating;
- ``always`` and ``always_query``: a whole read of the hub's summary view under
  ``probe="always"`` (a probe per read, then the hit), on a keeper of its own whose revision
  source uses the check, and one whose source does not;
- ``hit_swr`` and ``hit_swr_max_age``: hits of two views over the summary's sections on the
  hub's keeper (``probe="interval"``), ``Policy.swr(30)`` and ``Policy.swr(30, max_age=300)``:
  a ``max_age`` is checked on the slow path only.

The ``await`` floor and the hub's own hit (``freshkeep``) are the library level's loops.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from freshkeep.core.policy import Policy
from freshkeep.keeper import Keeper
from freshkeep.sql.revisions import SQLAlchemyRevisions
from freshkeep.views import Section, View

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from freshkeep.demo.hub import Hub

LoopFn = Callable[[int], Awaitable[int]]

BENCH_SOURCE = "bench:probe"
"""The counter the changed cases bump: no view reads it, so only the file's version moves."""

RATIOS: tuple[tuple[str, str, str], ...] = (
    ("freshkeep", "await", "hit: `await view.get()` / `await`"),
    ("freshkeep_read", "await", "hit: `await view.read()` / `await`"),
    ("probe_unchanged", "await", "probe, nothing committed / `await`"),
    ("probe_query", "probe_unchanged", "counter SELECT / probe, nothing committed"),
    ("probe_changed", "probe_changed_query", "after a commit: probe / SELECT alone"),
    ("always_query", "always", "probe=always read: SELECT each / data version check"),
    ("always", "freshkeep", "probe=always read (check) / probe=interval hit"),
    ("hit_swr_max_age", "hit_swr", "hit: `swr(30, max_age=300)` / `swr(30)`"),
    ("hit_swr_max_age", "await", "hit: `swr(30, max_age=300)` / `await`"),
)
"""The ratios reported: (numerator case, denominator case, label), medians of one run."""


@dataclass
class Loop:
    """A case timed in loops: its label, kind, group and ``await loop(n)`` -> elapsed ns."""

    label: str
    kind: str
    group: str
    fn: LoopFn
    counters: Callable[[], dict[str, int]] | None = None
    """Reads answered without a query (``skipped``) and queries run (``queried``), when the
    case reads revisions."""


@dataclass
class Probes:
    """The probe and policy cases of one run, and what to close after it."""

    engine: AsyncEngine
    sources: tuple[str, ...]
    loops: dict[str, Loop] = field(default_factory=dict)
    revisions: list[SQLAlchemyRevisions] = field(default_factory=list)
    keepers: list[Keeper] = field(default_factory=list)
    path: str = ""

    def source(self, *, skip_unchanged: bool) -> SQLAlchemyRevisions:
        """A revision source on the hub's engine, closed by :meth:`aclose`."""
        revisions = SQLAlchemyRevisions(self.engine, skip_unchanged=skip_unchanged)
        self.revisions.append(revisions)
        return revisions

    async def aclose(self) -> None:
        """Close the keepers and revision sources made for the run."""
        for keeper in self.keepers:
            await keeper.aclose()
        for revisions in self.revisions:
            revisions.close()


def counts(*sources: SQLAlchemyRevisions) -> Callable[[], dict[str, int]]:
    """``skipped`` and ``queried`` reads of ``sources`` so far."""

    def now() -> dict[str, int]:
        return {
            "skipped": sum(s.skipped for s in sources),
            "queried": sum(s.queries for s in sources),
        }

    return now


def _read_loop(revisions: SQLAlchemyRevisions, sources: tuple[str, ...]) -> LoopFn:
    read = revisions.read

    async def loop(n: int) -> int:
        t = time.perf_counter_ns()
        for _ in range(n):
            await read(sources)
        return time.perf_counter_ns() - t

    return loop


def _get_loop(view: View) -> LoopFn:
    get = view.get

    async def loop(n: int) -> int:
        t = time.perf_counter_ns()
        for _ in range(n):
            await get()
        return time.perf_counter_ns() - t

    return loop


def _sections(view: View) -> dict[str, Section]:
    """The view's sections (builders and sources) without their own policies."""
    return {n: Section(s.build, s.sources) for n, s in view.sections.items()}


async def setup(hub: Hub) -> Probes:
    """Make the cases on the started ``hub`` (its summary already built): revision sources,
    two keepers that probe on every read, two views on the hub's keeper; build each view."""
    summary = hub.summary
    database = hub.engine.url.database
    assert database, "the probes need a SQLite file"
    p = Probes(hub.engine, summary.sources, path=database)
    check = p.source(skip_unchanged=True)
    query = p.source(skip_unchanged=False)
    await check.read(p.sources)  # the check has revisions to answer from
    p.loops["probe_unchanged"] = Loop(
        "nothing committed: data version only",
        "hit",
        "probe",
        _read_loop(check, p.sources),
        counts(check),
    )
    p.loops["probe_query"] = Loop(
        "as before: the counter SELECT each read",
        "hit",
        "probe",
        _read_loop(query, p.sources),
        counts(query),
    )
    for name, skip in (("always", True), ("always_query", False)):
        revisions = p.source(skip_unchanged=skip)
        keeper = Keeper(revisions, probe="always")
        view = keeper.view("summary", sections=summary.sections, policy=summary.policy, public=True)
        await view.get()  # built once; every read after it probes, then hits
        p.keepers.append(keeper)
        how = "version check" if skip else "SELECT each"
        p.loops[name] = Loop(
            f"summary read, probe=always: {how}",
            "hit",
            "probe",
            _get_loop(view),
            counts(revisions),
        )
    for name, policy in (
        ("hit_swr", Policy.swr(30.0)),
        ("hit_swr_max_age", Policy.swr(30.0, max_age=300.0)),
    ):
        view = hub.keeper.view(
            f"bench_{name}", sections=_sections(summary), policy=policy, public=True
        )
        await view.get()
        assert (await view.get()).status == "hit"
        label = "max_age=300" if policy.max_age else "no max_age"
        p.loops[name] = Loop(f"view hit, `swr(30)`, {label}", "hit", "read", _get_loop(view))
    return p


def _commit_elsewhere(conn: sqlite3.Connection) -> None:
    """Another connection (as another process would) commits to the file."""
    conn.execute(
        "INSERT INTO freshkeep_revisions (source, revision) VALUES (?, 1) "
        "ON CONFLICT (source) DO UPDATE SET revision = revision + 1",
        (BENCH_SOURCE,),
    )


async def changed(p: Probes, samples: int) -> dict[str, tuple[str, list[float], dict[str, int]]]:
    """The reads right after a commit: ``probe_changed`` (check, then SELECT) and
    ``probe_changed_query`` (SELECT alone), alternating which goes first; each timed alone.
    Returns name -> (label, samples in ns, counters)."""
    check = p.source(skip_unchanged=True)
    query = p.source(skip_unchanged=False)
    await check.read(p.sources)
    cases = {
        "probe_changed": ("after a commit: data version + SELECT", check),
        "probe_changed_query": ("after a commit: SELECT alone (as before)", query),
    }
    out: dict[str, tuple[str, list[float], dict[str, int]]] = {
        name: (label, [], {}) for name, (label, _) in cases.items()
    }
    order = list(cases)
    conn = sqlite3.connect(p.path, timeout=5.0, isolation_level=None)
    try:
        for i in range(samples):
            for name in order if i % 2 == 0 else reversed(order):
                revisions = cases[name][1]
                _commit_elsewhere(conn)
                t = time.perf_counter_ns()
                await revisions.read(p.sources)
                out[name][1].append(float(time.perf_counter_ns() - t))
    finally:
        conn.close()
    for name, (_, revisions) in cases.items():
        out[name][2].update(counts(revisions)())
    out["probe_changed"][2]["queried"] -= 1  # the first read, before the samples
    return out


def ratios(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:data:`RATIOS` of ``cases`` (those measured): ``ratio`` is the median of the ratios of
    samples taken side by side (the same round of loops, or the same pair of reads after a
    commit), so a burst of load from elsewhere weighs on both; ``ratio_of_medians`` beside it."""
    by_name = {c["name"]: c for c in cases}
    out = []
    for num, den, label in RATIOS:
        a, b = by_name.get(num), by_name.get(den)
        if not a or not b or not a["median_ns"] or not b["median_ns"]:
            continue
        xs, ys = a["samples_ns"], b["samples_ns"]
        paired = [x / y for x, y in zip(xs, ys, strict=True) if y] if len(xs) == len(ys) else []
        of_medians = a["median_ns"] / b["median_ns"]
        out.append(
            {
                "num": num,
                "den": den,
                "label": label,
                "ratio": statistics.median(paired) if paired else of_medians,
                "paired": bool(paired),
                "ratio_of_medians": of_medians,
            }
        )
    return out
