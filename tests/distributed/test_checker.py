"""A linearizability-style check: three hub processes under writers and readers; every read
is checked against the history of acknowledged writes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from freshkeep.demo.summary import SUMMARY_POLICY
from tests.distributed.cluster import RESYNC_INTERVAL, SLACK, Cluster, stats
from tests.distributed.history import Load, check

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.redis]

DURATION = 20.0
"""Seconds of load."""
WRITERS, WRITE_INTERVAL = 2, 0.2
READERS, READ_INTERVAL = 6, 0.01
TOKEN_EVERY = 3
"""Every third read of a reader sends the causal token of the newest acknowledged write."""


@pytest.mark.slow
@pytest.mark.parametrize("bus", ["redis"])
@pytest.mark.parametrize("lock_wait", [None, 0.5], ids=["lock_wait-default", "lock_wait-0.5"])
async def test_every_read_is_within_its_bound_and_every_token_read_is_exact(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path, bus: str, lock_wait: float | None
) -> None:
    extra = {} if lock_wait is None else {"FRESHKEEP_LOCK_WAIT": str(lock_wait)}
    hubs = [await cluster.start(seed_tasks=30, bus=bus, extra=extra)]
    hubs += [await cluster.start(bus=bus, extra=extra) for _ in range(2)]
    load = Load(http, hubs)
    await load.run(
        DURATION,
        writers=WRITERS,
        write_interval=WRITE_INTERVAL,
        readers=READERS,
        read_interval=READ_INTERVAL,
        token_every=TOKEN_EVERY,
    )
    fresh_bound = RESYNC_INTERVAL + SLACK
    stale_bound = SUMMARY_POLICY.max_stale + RESYNC_INTERVAL + SLACK
    report = check(
        load,
        fresh_bound=fresh_bound,
        stale_bound=stale_bound,
        settings={
            "bus": bus,
            "lock_wait_s": lock_wait,
            "hubs": len(hubs),
            "duration_s": DURATION,
            "writers": WRITERS,
            "write_interval_s": WRITE_INTERVAL,
            "readers": READERS,
            "read_interval_s": READ_INTERVAL,
            "token_every": TOKEN_EVERY,
            "resync_interval_s": RESYNC_INTERVAL,
            "max_stale_s": SUMMARY_POLICY.max_stale,
            "fresh_bound_s": fresh_bound,
            "stale_bound_s": stale_bound,
        },
    )
    report["hub_stats"] = {h.name: (await stats(http, h))["views"]["summary"] for h in hubs}
    text = json.dumps(report, indent=1)
    print(f"\nchecker report: {text}")
    (tmp_path / "checker.json").write_text(text)
    if lock_wait is not None:  # a read waits at most lock_wait for another instance's build
        assert report["read_latency_ms"]["max"] < (lock_wait + SLACK) * 1000, report["slow_reads"]
    assert report["writes"] >= DURATION / WRITE_INTERVAL, report
    assert report["reads"] >= 10 * DURATION, report
    assert report["failed_writes"] == 0 and report["responses_5xx"] == 0, report
    assert report["transport_errors"] == 0, report
    assert report["token_reads"] > 0
    assert report["token_violation_count"] == 0, report["token_violations"]
    assert report["revision_violation_count"] == 0, report["revision_violations"]
    assert report["bound_violation_count"] == 0, report["bound_violations"]
    # A waiter for another instance's build takes the lock over as soon as the holder lets go
    # without storing what it needs: no read parks for the whole lock_wait (10 s by default).
    stalled = [r for r in report["slow_reads"] if r["s"] > 5.0]
    assert stalled == [], stalled[:3]
