"""``freshkeep bench``: what exact, revision-gated caching costs, against the alternatives.

Two levels (see ``docs/performance.md``):

- library (:mod:`freshkeep.bench.library`): ns per read in one process: a freshkeep view hit
  beside a dict lookup, an ``await``, and the memory backends of dogpile.cache, aiocache and
  cashews; a stale read, a section rebuild and a miss of the hub's summary; the revision
  probes on a SQLite file (:mod:`freshkeep.bench.probes`);
- service (:mod:`freshkeep.bench.service`): the hub's summary under uvicorn in several modes
  (floor, freshkeep, fixed TTL, ``MAX(updated_at)`` probe, uncached), load from another
  process, and the freshness of every response while a writer changes the data;
- distributed (:mod:`freshkeep.bench.distributed`, only when asked): two hub processes on a
  fresh PostgreSQL database with a Redis store and bus: read load on both, and how long a write
  to one takes to show in the other's summary;
- keyed (:mod:`freshkeep.bench.keyed`, only when asked): a view read by key (1,000 customers)
  under 4 writes/s, with per-table revisions beside per-key revisions (1,024 and 64 buckets):
  hit ratios, rebuilds per write, false invalidations and reads/s, side by side;
- fastapi (:mod:`freshkeep.bench.fastapi_route`, only when asked): the hub's FastAPI route
  ``GET /state/summary`` beside a bare Starlette endpoint and a bare FastAPI route returning
  the same bytes, loaded by wrk (when installed) and the load generator in interleaved rounds:
  req/s, p99 and their ratios, against the targets (≥ 90% of Starlette's, ≥ 150% of FastAPI's);
- scale (:mod:`freshkeep.bench.scale`, only when asked): a hub of ``--seed-tasks`` tasks
  (1,000,000 by default): seeding time, a full build, the read after a core write with and
  without deltas (also through HTTP, after ``POST /decisions``), resident memory.

:func:`run` runs them and writes ``results.md``, ``results.json`` and ``results.png``. Needs
``pip install 'freshkeep[bench]'`` (the peers, uvloop, httptools, matplotlib).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from freshkeep.bench.distributed import DistributedConfig, run_distributed
from freshkeep.bench.fastapi_route import FastAPIConfig, run_fastapi
from freshkeep.bench.keyed import KeyedConfig, run_keyed
from freshkeep.bench.library import LibraryConfig, run_library
from freshkeep.bench.progress import NullReporter, PrintReporter, Reporter
from freshkeep.bench.report import machine, write
from freshkeep.bench.scale import ScaleConfig, run_scale
from freshkeep.bench.service import MODE_NAMES, MODES, Mode, ServiceConfig, run_service

__all__ = [
    "LEVELS",
    "MODES",
    "MODE_NAMES",
    "BenchConfig",
    "DistributedConfig",
    "FastAPIConfig",
    "KeyedConfig",
    "LibraryConfig",
    "Mode",
    "NullReporter",
    "PrintReporter",
    "Reporter",
    "ScaleConfig",
    "ServiceConfig",
    "full",
    "quick",
    "run",
]


@dataclass
class BenchConfig:
    """What a run measures: ``levels`` is a subset of :data:`LEVELS` (``distributed`` needs
    PostgreSQL and Redis; neither it, ``keyed`` nor ``fastapi`` is a default level)."""

    preset: str = "full"
    levels: tuple[str, ...] = ("library", "service")
    library: LibraryConfig = field(default_factory=LibraryConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    keyed: KeyedConfig = field(default_factory=KeyedConfig)
    fastapi: FastAPIConfig = field(default_factory=FastAPIConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    chart: bool = True


LEVELS = ("library", "service", "distributed", "keyed", "fastapi", "scale")
"""Every level, in the order a run measures them."""


def full() -> BenchConfig:
    """The documented run: 10,000 tasks; 15 library rounds; per mode, three interleaved 3 s
    read rounds and a 16 s write phase (longer than the TTL mode's 15 s). About 3 minutes."""
    return BenchConfig()


def quick() -> BenchConfig:
    """A smoke run (well under 2 minutes): small hub, few rounds, about 5 s per mode; the
    keyed level (when asked) measures for 3 s, the fastapi level two rounds of 1 s."""
    return BenchConfig(
        preset="quick",
        library=LibraryConfig(
            seed_tasks=500,
            rounds=5,
            round_s=0.02,
            stale_samples=10,
            section_samples=3,
            miss_samples=3,
            probe_samples=20,
        ),
        # three read rounds, so that the report can tell a difference from the run's noise
        service=ServiceConfig(seed_tasks=500, read_s=0.5, read_rounds=3, write_s=2.0, warmup_s=0.3),
        distributed=DistributedConfig(seed_tasks=500, read_s=1.0, warmup_s=0.3, writes=20),
        keyed=KeyedConfig(seconds=3.0),
        fastapi=FastAPIConfig(seed_tasks=500, rounds=2, seconds=1.0, warmup_s=0.3),
        scale=ScaleConfig(seed_tasks=500, samples=5, rebuild_samples=3, miss_samples=2),
    )


def run(
    config: BenchConfig,
    out: Path,
    reporter: Reporter | None = None,
    *,
    command: str | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run the benchmark as ``config`` says and write its outputs into ``out``.

    ``command`` is how the run was started, for the report. Returns the figures and the paths
    written (``markdown``, ``json`` and, with matplotlib, ``png``).
    """
    rep = reporter if reporter is not None else NullReporter()
    started = time.monotonic()
    results: dict[str, Any] = {
        "preset": config.preset,
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or f"freshkeep bench{' --quick' if config.preset == 'quick' else ''}",
        "machine": machine(),
        "config": asdict(config),
    }
    if "library" in config.levels:
        results["library"] = asyncio.run(run_library(config.library, rep))
    if "service" in config.levels:
        results["service"] = run_service(config.service, rep)
    if "distributed" in config.levels:
        results["distributed"] = run_distributed(config.distributed, rep)
    if "keyed" in config.levels:
        results["keyed"] = asyncio.run(run_keyed(config.keyed, rep))
    if "fastapi" in config.levels:
        results["fastapi"] = run_fastapi(config.fastapi, rep)
        results.setdefault("notes", []).extend(results["fastapi"]["notes"])
    if "scale" in config.levels:
        results["scale"] = asyncio.run(run_scale(config.scale, rep))
    results["seconds"] = time.monotonic() - started
    rep.stage("writing the report", 1)
    paths = write(results, out, draw=config.chart)
    for note in results.get("notes", []):
        rep.note(note)
    rep.advance()
    return results, paths
