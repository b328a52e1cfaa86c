"""The FastAPI level's parsing of wrk, its summary of rounds and its report (no timing)."""

from __future__ import annotations

from typing import Any

import pytest

from freshkeep.bench.fastapi_route import (
    BARE,
    HUB,
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
        BARE: [_round(1000, 10), _round(2000, 10), _round(3000, 20)],
        HUB: [_round(950, 12), _round(1000, 12), _round(2970, 20, None)],
    }
    s = summarize(rounds)
    assert s["routes"][BARE]["rps"] == 2000 and s["routes"][HUB]["rps"] == 1000
    assert s["routes"][HUB]["cpu_us"] == 100.0
    assert s["rps_ratio"]["rounds"] == pytest.approx([0.95, 0.5, 0.99])
    assert s["p99_ratio"]["rounds"] == pytest.approx([1.2, 1.2, 1.0])
    for key, expected in (("rps_ratio", (0.95, 0.5, 0.99)), ("p99_ratio", (1.2, 1.0, 1.2))):
        got = tuple(s[key][k] for k in ("median", "min", "max"))
        assert got == pytest.approx(expected)
    assert s["within_tolerance"] is False  # req/s 0.95 is within 10%, p99 1.20 is not
    assert s["within_noise"] is False  # 0.20 off, the rounds' p99 ratios span 0.20
    noisy = summarize(
        {BARE: [_round(1000, 10), _round(1000, 10)], HUB: [_round(990, 18), _round(990, 9)]}
    )
    assert not noisy["within_tolerance"] and noisy["within_noise"]  # p99 1.35: 0.35 off, span 0.9
    fast = summarize({BARE: [_round(1000, 10)], HUB: [_round(990, 10.5)]})
    assert fast["within_tolerance"] is True


def test_report_section_fits_100_columns_and_says_when_wrk_is_missing() -> None:
    rounds = {BARE: [_round(6000, 9.0)], HUB: [_round(5900, 9.5)]}
    result = {
        "seed_tasks": 10_000,
        "rounds": 1,
        "seconds": 3,
        "connections": 16,
        "server": {"loop": "uvloop", "http": "httptools", "workers": 1},
        "wrk": None,
        "tools": {"loadgen": {"rounds": rounds, **summarize(rounds)}},
        "notes": ["wrk is not installed: the FastAPI level ran the load generator only"],
    }
    text = "\n".join(markdown_lines(result))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "| loadgen | hub's route `/state/summary` | 5,900 | 9.50 | 100 | 0 |" in text
    assert "| loadgen | 0.98 (0.98 - 0.98) | 1.06 (1.06 - 1.06) | yes |" in text
    assert "wrk is not installed" in text
    (target,) = targets(result)
    assert target["met"] is True and "(loadgen)" in target["target"]
    assert targets(None) == []


def test_the_widest_report_fits_100_columns() -> None:
    """Ten rounds, huge and tiny figures, a target missed within noise: every line of the
    section and of the targets table stays within 100 columns."""
    from freshkeep.bench.report import markdown

    bare = [_round(123456.0, 0.01) for _ in range(10)]
    hub = [_round(1.0 + i * 99999.0, 9999.99, None) for i in range(10)]
    rounds = {BARE: bare, HUB: hub}
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
