"""Smoke run of ``freshkeep bench --quick``: it finishes and writes well-formed outputs.

No assertion on speed: the figures of a loaded CI machine say nothing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

MODES = {"floor", "floor-fastapi", "freshkeep", "freshkeep-fastapi", "ttl", "maxprobe", "uncached"}
PROBES = {
    "probe_unchanged",
    "probe_query",
    "probe_changed",
    "probe_changed_query",
    "always",
    "always_query",
}


def test_quick_bench_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "freshkeep.cli",
        "bench",
        "--quick",
        "--out",
        str(out),
        "--read-seconds",
        "0.5",
        "--write-seconds",
        "1",
        "--seed-tasks",
        "200",
    ]
    # a guard against a hang, not a speed check: a loaded machine may take minutes
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=360, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "benchmarks").exists()  # --out given: nothing else written

    data = json.loads((out / "results.json").read_text())
    assert data["preset"] == "quick"
    assert data["machine"]["cores"]
    names = {c["name"] for c in data["library"]["cases"]}
    expected = {"dict", "await", "freshkeep", "freshkeep_read", "stale", "section_core", "miss"}
    assert expected <= names
    assert "section_core_rebuild" in names
    for case in data["library"]["cases"]:
        assert case["n_samples"] > 0 and case["median_ns"] > 0, case
    statuses = {c["name"]: c["statuses"] for c in data["library"]["cases"]}
    assert set(statuses["stale"]) == {"stale"}
    assert set(statuses["miss"]) == {"miss"}
    # The revision probes (SQLite data version vs the counter SELECT) and the policy hits.
    assert PROBES | {"hit_swr", "hit_swr_max_age"} <= names
    groups = {c["name"]: c["group"] for c in data["library"]["cases"]}
    assert {groups[n] for n in PROBES} == {"probe"} and groups["hit_swr_max_age"] == "read"
    assert statuses["probe_unchanged"]["skipped"] > 0  # answered by the data version alone
    for name in ("probe_query", "always_query", "probe_changed", "probe_changed_query"):
        assert statuses[name]["skipped"] == 0 and statuses[name]["queried"] > 0, name
    ratios = {(r["num"], r["den"]): r["ratio"] for r in data["library"]["ratios"]}
    assert ("hit_swr_max_age", "hit_swr") in ratios and ("probe_query", "probe_unchanged") in ratios
    assert all(r > 0 for r in ratios.values())

    modes = data["service"]["modes"]
    assert set(modes) == MODES
    for name, mode in modes.items():
        for phase in ("read", "write"):
            assert mode[phase]["requests"] > 0, (name, phase)
            assert mode[phase]["errors"] == 0, (name, phase)
        assert mode["write"]["writes"]["count"] > 0
        fresh = mode["write"]["freshness"]
        assert (fresh is None) == name.startswith("floor")
    # Local writes are read-your-writes: freshkeep never serves them stale.
    assert modes["freshkeep"]["write"]["freshness"]["beyond_bound"] == 0
    assert {t["target"] for t in data["targets"]}

    report = (out / "results.md").read_text()
    for heading in (
        "## Library level",
        "### Revision probes",
        "### Read phase",
        "### Write phase",
        "## Targets",
    ):
        assert heading in report
    assert max(len(line) for line in report.splitlines()) <= 100
    assert "| hit: `swr(30, max_age=300)` / `swr(30)` |" in report
    assert "| freshkeep |" in report
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "results.png").read_bytes().startswith(b"\x89PNG")


def test_distributed_section_is_reported_without_a_chart(tmp_path: Path) -> None:
    """The distributed level's figures (from PostgreSQL + Redis, not run here) are written
    into results.md/.json; a run of that level alone draws no chart."""
    from freshkeep.bench.report import machine, write

    phase = {
        "connections": 8,
        "rps": 4000.0,
        "requests": 20000,
        "errors": 0,
        "latency_ms": {"p50": 1.9, "p90": 2.2, "p99": 2.5, "max": 9.0, "mean": 2.0},
        "labels": {"hit": 20000},
    }
    stats = {"p50": 8.4, "p90": 10.0, "p99": 12.6, "max": 12.6, "mean": 8.5}
    part = {"p50": 1.2, "p90": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.5}
    invalidation = {
        "writes": 50,
        "seen": 50,
        "timeouts": 0,
        "timeout_s": 10.0,
        "target_ms": 5.0,
        "latency_ms": stats,
        "polls": {**stats, "p50": 1.0, "max": 1.0},
        "write_latency_ms": stats,
        "parts": {k: part for k in ("delivery_ms", "rebuild_ms", "read_ms", "polling_ms")},
    }
    results = {
        "preset": "full",
        "started_at": "2026-01-01 00:00 UTC",
        "command": "freshkeep bench --level distributed",
        "machine": machine(),
        "seconds": 11.0,
        "distributed": {
            "seed_tasks": 10_000,
            "read_s": 5.0,
            "warmup_s": 0.5,
            "connections": 16,
            "resync_interval_s": 1.0,
            "read": {
                "rps": 8000.0,
                "requests": 40000,
                "errors": 0,
                "hubs": {"A": phase, "B": phase},
            },
            "invalidation": {mode: invalidation for mode in ("on_read", "on_push")},
        },
    }
    paths = write(results, tmp_path)
    assert set(paths) == {"markdown", "json"}
    report = paths["markdown"].read_text()
    assert "## Distributed: two hubs on PostgreSQL + Redis" in report
    assert "| both | 16 | 8,000 |" in report
    assert max(len(line) for line in report.splitlines()) <= 100
    for mode in ("on_read", "on_push"):
        assert f"| {mode} | **A → B** (50 seen, 0 timed out) | 8.40 | 12.60 | 12.60 |" in report
    assert "| | bus delivery: A's publish → B's listener | 1.20 | 3.00 | 4.00 |" in report
    data = json.loads(paths["json"].read_text())
    assert data["distributed"]["invalidation"]["on_push"]["seen"] == 50
    assert {t["target"]: t["met"] for t in data["targets"]} == {
        "write on A served by B, p99 < 5 ms (on_read)": False,
        "write on A served by B, p99 < 5 ms (on_push)": False,
    }


@pytest.mark.parametrize("wrk", ["wrk", "no-such-wrk"])
def test_fastapi_level_runs_with_or_without_wrk(tmp_path: Path, wrk: str) -> None:
    """``--level fastapi``: the hub's route, the bare Starlette endpoint and the bare FastAPI
    route, each round loaded by wrk (when it is found) and the load generator; without wrk, a
    note says so. Both targets are reported per tool (whether they are met is the full run's
    business, not a smoke test's)."""
    import shutil

    from freshkeep.bench import BenchConfig, FastAPIConfig, run

    config = BenchConfig(
        preset="quick",
        levels=("fastapi",),
        fastapi=FastAPIConfig(seed_tasks=200, rounds=2, seconds=1.0, warmup_s=0.3, wrk=wrk),
        chart=False,
    )
    results, paths = run(config, tmp_path / "out")
    level = results["fastapi"]
    found = shutil.which(wrk) is not None
    assert list(level["tools"]) == (["wrk", "loadgen"] if found else ["loadgen"])
    for tool in level["tools"].values():
        for path in ("/bench/floor-starlette", "/bench/floor-fastapi", "/state/summary"):
            assert len(tool["rounds"][path]) == 2
            assert all(r["requests"] > 0 and r["errors"] == 0 for r in tool["rounds"][path])
        for bare in ("/bench/floor-starlette", "/bench/floor-fastapi"):
            assert tool["against"][bare]["rps_ratio"]["median"] > 0
    report = paths["markdown"].read_text()
    assert "## FastAPI route" in report and "| loadgen | hub's route `/state/summary` |" in report
    assert "| loadgen | bare Starlette |" in report and "| loadgen | bare FastAPI |" in report
    assert max(len(line) for line in report.splitlines()) <= 100
    assert ("wrk is not installed" in report) is not found
    assert {t["target"] for t in results["targets"]} == {
        f"hub route ≥ {share} of bare {bare} req/s ({tool})"
        for tool in level["tools"]
        for share, bare in (("90%", "Starlette"), ("150%", "FastAPI"))
    }


def test_scale_level_reports_seeding_builds_deltas_and_memory(tmp_path: Path) -> None:
    """``--level scale`` (here with a small seed): the read after a core write with deltas
    and without, in the library and through HTTP after ``POST /decisions``, side by side."""
    from freshkeep.bench import BenchConfig, ScaleConfig, run

    config = BenchConfig(
        preset="quick",
        levels=("scale",),
        scale=ScaleConfig(seed_tasks=300, samples=3, rebuild_samples=3, miss_samples=2),
        chart=False,
    )
    results, paths = run(config, tmp_path / "out")
    scale = results["scale"]
    assert scale["seed_tasks"] == 300 and scale["rows"] > 300 and scale["seeding_s"] > 0
    assert scale["peak_rss_mib"] > 0 and scale["body_bytes"] > 0
    for case in ("miss", "delta", "rebuild", "http_delta", "http_rebuild"):
        assert scale[case]["n"] > 0 and scale[case]["median_ms"] > 0, case
    # what each read was: the delta's, applied; the rebuild's, built
    assert scale["delta"]["statuses"] == {"section (delta)": 3}
    assert scale["http_delta"]["statuses"] == {"section (delta)": 3}
    assert scale["rebuild"]["statuses"] == {"section": 3}
    assert scale["miss"]["statuses"] == {"miss": 2}
    report = paths["markdown"].read_text()
    assert "## Scale: the summary at 300 tasks" in report
    assert "| after a core write: delta |" in report
    assert max(len(line) for line in report.splitlines()) <= 100
    (target,) = results["targets"]
    assert target["target"] == "read after a core write ≤ 1 ms at 300 tasks"
    assert json.loads(paths["json"].read_text())["scale"]["delta"]["n"] == 3


def test_scale_level_reuses_a_seeded_database(tmp_path: Path) -> None:
    """``--scale-db FILE``: the first run seeds the file and keeps it, the next one skips the
    seeding and measures the same reads."""
    from freshkeep.bench import BenchConfig, ScaleConfig, run

    db = tmp_path / "scale.db"
    scale = ScaleConfig(seed_tasks=200, samples=2, rebuild_samples=1, miss_samples=1)
    scale.database = str(db)
    config = BenchConfig(preset="quick", levels=("scale",), scale=scale, chart=False)
    first, _ = run(config, tmp_path / "one")
    assert first["scale"]["seeded"] and first["scale"]["rows"] > 200 and db.exists()
    second, paths = run(config, tmp_path / "two")
    assert not second["scale"]["seeded"] and second["scale"]["rows"] == 0
    assert second["scale"]["delta"]["statuses"] == {"section (delta)": 2}
    assert "Reused a seeded database" in paths["markdown"].read_text()
