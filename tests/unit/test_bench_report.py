"""The benchmark's report: ratios measured side by side, labelled *within noise* when the
rounds' own spread is larger than the difference; every line within 100 columns."""

from __future__ import annotations

from typing import Any

import pytest

from freshkeep.bench.noise import ratio_cell, side_by_side, within_noise
from freshkeep.bench.report import markdown, targets

MACHINE = {
    "cpu": "test CPU",
    "cores": 2,
    "memory_mib": 1024,
    "os": "Linux",
    "python": "CPython 3.11",
    "packages": {"freshkeep": "0.1.0"},
}


def _phase(rps: float) -> dict[str, Any]:
    return {
        "rps": rps,
        "latency_ms": {"p50": 1.5, "p99": 3.25},
        "labels": {"hit": 100},
        "writes": {"count": 10},
        "freshness": None,
    }


def _results(rounds: dict[str, list[float]]) -> dict[str, Any]:
    modes = {
        name: {
            "path": f"/bench/{name}",
            "what": f"the {name} mode",
            "bound_s": 0.0,
            "read": _phase(sorted(rps)[(len(rps) - 1) // 2]),
            "read_rounds_rps": rps,
            "write": _phase(rps[0]),
        }
        for name, rps in rounds.items()
    }
    return {
        "preset": "quick",
        "started_at": "2026-01-01 00:00 UTC",
        "command": "freshkeep bench --quick",
        "machine": MACHINE,
        "seconds": 60.0,
        "service": {
            "server": {"loop": "uvloop", "http": "httptools", "workers": 1},
            "connections": 16,
            "seed_tasks": 500,
            "read_rounds": len(next(iter(rounds.values()))),
            "read_s": 1.0,
            "write_rate": 4.0,
            "write_s": 2.0,
            "modes": modes,
        },
    }


def _row(report: str, mode: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(f"| {mode} | "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _target(results: dict[str, Any], start: str) -> dict[str, Any]:
    return next(t for t in targets(results) if t["target"].startswith(start))


def test_within_noise_compares_the_difference_with_the_rounds_spread() -> None:
    assert within_noise([1.31, 0.9, 1.05])  # median 1.05: 0.05 off, the rounds span 0.41
    assert not within_noise([1.31, 1.25, 1.35])  # 0.31 off, the rounds span 0.10
    assert not within_noise([1.31])  # one round: no spread measured
    assert not within_noise([20.0, 35.0, 80.0])  # 35 times, in rounds of 20 to 80 times
    assert within_noise([0.87, 0.57, 3.23]) and not within_noise([0.0, 1.0])
    assert side_by_side([2.0, 3.0], [1.0, 0.0]) == [2.0]
    assert side_by_side([1.0], [1.0, 2.0]) == side_by_side(None, [1.0]) == []
    assert ratio_cell(1.31, [1.31, 0.9, 1.05]) == "within noise"
    assert ratio_cell(1.31, [1.31, 1.25, 1.35]) == "1.31"


def test_a_difference_within_the_rounds_spread_says_within_noise() -> None:
    results = _results(
        {
            "floor": [5000.0, 6000.0, 4000.0],
            "freshkeep": [6550.0, 5400.0, 4200.0],  # 131%, 90%, 105% of the floor
            "uncached": [50.0, 60.0, 40.0],
            "maxprobe": [200.0, 100.0, 100.0],  # freshkeep: 33, 54, 42 times
        }
    )
    report = markdown(results)
    assert _row(report, "freshkeep")[4:6] == ["within noise", "1.00"]
    assert _row(report, "floor")[4:6] == ["1.00", "within noise"]
    assert _row(report, "uncached")[4:6] == ["0.01", "108.00"]
    assert _row(report, "maxprobe")[4:6] == ["0.02", "54.00"]  # a large ratio is no noise
    floor = _target(results, "HTTP hit throughput ≥ 80% of the floor")
    assert floor["measured"] == "within noise (rounds: 131%, 90%, 105%)"
    assert "131% of" not in report
    assert max(len(line) for line in report.splitlines()) <= 100


def test_a_difference_beyond_the_spread_is_a_ratio() -> None:
    results = _results(
        {
            "floor": [5000.0, 6000.0, 4000.0],
            "freshkeep": [6550.0, 7800.0, 5400.0],  # 131%, 130%, 135%
            "floor-fastapi": [3000.0, 3600.0, 2400.0],
            "freshkeep-fastapi": [2400.0, 2880.0, 1920.0],  # 80% in every round
        }
    )
    report = markdown(results)
    assert _row(report, "freshkeep")[4] == "1.31"
    assert _target(results, "HTTP hit throughput")["measured"] == (
        "131% (median of rounds: 131%, 130%, 135%)"
    )
    fastapi = _target(results, "FastAPI route ≥ 90% of a bare one")
    assert fastapi["measured"].startswith("80% (median of rounds") and fastapi["met"] is False
    assert max(len(line) for line in report.splitlines()) <= 100


@pytest.mark.parametrize("rounds", [[5000.0], None])
def test_one_round_measures_no_noise(rounds: list[float] | None) -> None:
    results = _results({"floor": [5000.0], "freshkeep": [6550.0]})
    if rounds is None:
        for mode in results["service"]["modes"].values():
            del mode["read_rounds_rps"]  # results.json of an older run
    report = markdown(results)
    assert _row(report, "freshkeep")[4] == "1.31"
    floor = _target(results, "HTTP hit throughput")
    assert floor["measured"] == "131% (one round: noise not measured)" and floor["met"]


def test_many_rounds_keep_the_targets_within_100_columns() -> None:
    floor = [5000.0 + 1000.0 * i for i in range(10)]
    results = _results(
        {
            "floor": floor,
            "freshkeep": [f * (0.3 + 0.4 * (i % 4)) for i, f in enumerate(floor)],
            "floor-fastapi": floor,
            "freshkeep-fastapi": [f * (0.2 + 0.5 * (i % 3)) for i, f in enumerate(floor)],
        }
    )
    floor_target = _target(results, "HTTP hit throughput")
    assert floor_target["measured"] == "within noise (10 rounds: 30% to 150%)"
    report = markdown(results | {"targets": targets(results)})
    assert max(len(line) for line in report.splitlines()) <= 100


def test_both_hit_entry_points_are_held_to_twice_the_await_floor() -> None:
    from freshkeep.bench.probes import ratios

    def case(name: str, samples: list[float]) -> dict[str, Any]:
        med = sorted(samples)[len(samples) // 2]
        return {
            "name": name,
            "label": name,
            "kind": "hit",
            "group": "read",
            "median_ns": med,
            "q1_ns": med,
            "q3_ns": med,
            "samples_ns": samples,
        }

    cases = [
        case("await", [100.0, 200.0, 100.0]),  # the second round ran under load
        case("freshkeep", [240.0, 260.0, 230.0]),
        case("freshkeep_read", [150.0, 400.0, 140.0]),  # 1.5, 2.0, 1.4 of the same rounds
    ]
    results = {"library": {"cases": cases, "ratios": ratios(cases)}}
    get = _target(results, "in-process hit ≤ 2x")
    read = _target(results, "in-process hit `view.read()` ≤ 2x")
    assert (get["measured"], get["met"]) == ("2.30x", False)
    assert (read["measured"], read["met"]) == ("1.50x", True)


def test_invalidation_rows_show_each_mode_beside_its_parts_and_the_target() -> None:
    from freshkeep.bench.distributed import PARTS, invalidation_lines
    from freshkeep.bench.distributed import targets as dist_targets

    def q(p50: float, p99: float) -> dict[str, float]:
        return {"p50": p50, "p90": p99, "p99": p99, "max": p99, "mean": p50}

    def inv(p99: float, timeouts: int = 0) -> dict[str, Any]:
        return {
            "writes": 200,
            "seen": 200 - timeouts,
            "timeouts": timeouts,
            "timeout_s": 10.0,
            "target_ms": 5.0,
            "latency_ms": q(p99 / 2, p99),
            "polls": q(1, 1),
            "write_latency_ms": q(6.0, 9.0),
            "parts": {key: q(0.5, 1.0) for key, _ in PARTS},
        }

    dist = {"invalidation": {"on_read": inv(12.5), "on_push": inv(4.2)}}
    rows = {t["target"]: t for t in dist_targets(dist)}
    assert rows["write on A served by B, p99 < 5 ms (on_read)"]["met"] is False
    assert rows["write on A served by B, p99 < 5 ms (on_push)"]["met"] is True
    timed_out = dist_targets({"invalidation": {"on_push": inv(4.2, timeouts=1)}})
    assert timed_out[0]["met"] is False  # a write never seen fails the target, whatever p99
    lines = invalidation_lines(dist)
    assert sum("**A → B**" in x for x in lines) == 2
    assert sum(label in x for x in lines for _, label in PARTS) == 2 * len(PARTS)
    assert max(len(x) for x in lines) <= 100
    assert invalidation_lines({"invalidation": {}}) == []
