"""The FastAPI level's parsing of wrk, its summary of rounds, its targets and its report (no
timing)."""

from __future__ import annotations

from typing import Any

import pytest

from freshkeep.bench.fastapi_route import (
    BARE,
    HUB,
    STARLETTE,
    markdown_lines,
    parse_wrk,
    summarize,
    targets,
)

WRK = """Running 3s test @ http://127.0.0.1:8000/state/summary
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms  690.42us  12.04ms   88.01%
    Req/Sec     6.16k   312.10     6.52k    80.00%
  Latency Distribution
     50%    2.47ms
     75%  812.00us
     90%    3.20ms
     99%    1.20s
  18393 requests in 3.00s, 503.21MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   6129.06
Transfer/sec:    167.70MB
"""


def test_parse_wrk_reads_rate_latency_and_errors() -> None:
    r = parse_wrk(WRK)
    assert r["rps"] == pytest.approx(6129.06)
    assert r["requests"] == 18393
    assert r["errors"] == 7
    assert r["latency_ms"] == pytest.approx({"p50": 2.47, "p75": 0.812, "p90": 3.2, "p99": 1200.0})
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("wrk: command failed")


def _round(rps: float, p99: float, cpu: float | None = 100.0) -> dict[str, Any]:
    return {
        "rps": rps,
        "requests": int(rps * 3),
        "errors": 0,
        "p50_ms": 1.0,
        "p99_ms": p99,
        "cpu_us": cpu,
    }


def test_summarize_takes_medians_and_the_ratios_of_the_same_rounds() -> None:
    rounds = {
        STARLETTE: [_round(1000, 10), _round(2000, 10), _round(3000, 20)],
        BARE: [_round(500, 20), _round(1000, 20), _round(1000, 40)],
        HUB: [_round(950, 12), _round(1000, 12), _round(2970, 20, None)],
    }
    s = summarize(rounds)
    assert s["routes"][STARLETTE]["rps"] == 2000 and s["routes"][HUB]["rps"] == 1000
    assert s["routes"][HUB]["cpu_us"] == 100.0
    starlette, fastapi = s["against"][STARLETTE], s["against"][BARE]
    assert starlette["rps_ratio"]["rounds"] == pytest.approx([0.95, 0.5, 0.99])
    assert starlette["p99_ratio"]["rounds"] == pytest.approx([1.2, 1.2, 1.0])
    for key, expected in (("rps_ratio", (0.95, 0.5, 0.99)), ("p99_ratio", (1.2, 1.0, 1.2))):
        got = tuple(starlette[key][k] for k in ("median", "min", "max"))
        assert got == pytest.approx(expected)
    assert fastapi["rps_ratio"]["rounds"] == pytest.approx([1.9, 1.0, 2.97])
    assert (starlette["target"], fastapi["target"]) == (0.9, 1.5)
    assert starlette["met"] is True and fastapi["met"] is True and s["met"] is True
    slow = summarize(
        {STARLETTE: [_round(1000, 10)], BARE: [_round(1000, 10)], HUB: [_round(890, 10)]}
    )
    assert not slow["against"][STARLETTE]["met"] and not slow["against"][BARE]["met"]
    assert not slow["met"] and not slow["against"][BARE]["within_noise"]  # one round: no spread
    noisy = summarize(
        {
            STARLETTE: [_round(1000, 10), _round(1000, 10)],
            BARE: [_round(1000, 10), _round(1000, 10)],
            HUB: [_round(1300, 10), _round(1600, 10)],
        }
    )
    # 1.45 x FastAPI misses 1.5 by 3%, the rounds span 1.3 to 1.6: within noise
    assert not noisy["against"][BARE]["met"] and noisy["against"][BARE]["within_noise"]


def _result(rounds: dict[str, list[dict[str, Any]]], wrk: str | None = None) -> dict[str, Any]:
    return {
        "seed_tasks": 10_000,
        "rounds": len(rounds[HUB]),
        "seconds": 3,
        "connections": 16,
        "server": {"loop": "uvloop", "http": "httptools", "workers": 1},
        "wrk": wrk,
        "tools": {"loadgen": {"rounds": rounds, **summarize(rounds)}},
        "notes": []
        if wrk
        else ["wrk is not installed: the FastAPI level ran the load generator only"],
    }


def test_report_section_fits_100_columns_and_says_when_wrk_is_missing() -> None:
    rounds = {
        STARLETTE: [_round(6000, 9.0)],
        BARE: [_round(3000, 18.0)],
        HUB: [_round(5900, 9.5)],
    }
    result = _result(rounds)
    text = "\n".join(markdown_lines(result))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "| loadgen | hub's route `/state/summary` | 5,900 | 9.50 | 100 | 0 |" in text
    assert "| loadgen | bare Starlette endpoint `/bench/floor-starlette` | 6,000 |" in text
    assert "| loadgen | bare Starlette | 0.98 (0.98 - 0.98) | ≥ 0.90 | yes | 1.06" in text
    assert "| loadgen | bare FastAPI | 1.97 (1.97 - 1.97) | ≥ 1.50 | yes | 0.53" in text
    assert "wrk is not installed" in text
    found = targets(result)
    assert [t["target"] for t in found] == [
        "hub route ≥ 90% of bare Starlette req/s (loadgen)",
        "hub route ≥ 150% of bare FastAPI req/s (loadgen)",
    ]
    assert [t["measured"] for t in found] == ["req/s 98%", "req/s 197%"]
    assert all(t["met"] for t in found)
    missed = _result(
        {STARLETTE: [_round(6000, 9.0)], BARE: [_round(5000, 9)], HUB: [_round(5000, 9)]}
    )
    assert [t["met"] for t in targets(missed)] == [False, False]
    assert "| ≥ 0.90 | **no** |" in "\n".join(markdown_lines(missed))
    assert targets(None) == []


def test_the_widest_report_fits_100_columns() -> None:
    """Ten rounds, huge and tiny figures, a target missed within noise: every line of the
    section and of the targets table stays within 100 columns."""
    from freshkeep.bench.report import markdown

    bare = [_round(123456.0, 0.01) for _ in range(10)]
    hub = [_round(1.0 + i * 99999.0, 9999.99, None) for i in range(10)]
    rounds = {STARLETTE: bare, BARE: bare, HUB: hub}
    tools = {t: {"rounds": rounds, **summarize(rounds)} for t in ("wrk", "loadgen")}
    result = {
        "seed_tasks": 1_000_000,
        "rounds": 10,
        "seconds": 30,
        "connections": 1024,
        "server": {"loop": "asyncio", "http": "h11", "workers": 1},
        "wrk": "debian/4.1.0-3+b2 [epoll]",
        "tools": tools,
        "notes": [],
    }
    text = "\n".join(markdown_lines(result))
    assert max(len(line) for line in text.splitlines()) <= 100
    for t in targets(result):
        row = f"| {t['target']} | {t['measured']} | **no** |"
        assert len(row) <= 100, row
    machine = {"cpu": "x" * 60, "cores": 2, "memory_mib": 1, "os": "y" * 60, "python": "3.11"}
    whole = {
        "preset": "full",
        "started_at": "2026-01-01 00:00 UTC",
        "command": "freshkeep bench --level fastapi --rounds 10",
        "machine": {**machine, "packages": {"freshkeep": "0.1.0"}},
        "seconds": 1.0,
        "fastapi": result,
    }
    report = markdown(whole | {"targets": targets(result)})
    assert max(len(line) for line in report.splitlines()) <= 100
