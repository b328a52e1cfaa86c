"""Two hubs under a read and write load on the Redis topologies that scale out: a Redis
Cluster, and a primary watched by Sentinel that fails over in the middle of the load.

The hubs share a store and a bus through ``redis+cluster://`` (three masters) or
``redis+sentinel://`` (a primary, a replica and three Sentinels), servers that the test starts.
Under Sentinel, a few seconds into the load, the primary fails over (``SENTINEL FAILOVER``) or
is killed; on a cluster whose masters have replicas, the master that owns the bus's channel is
killed. Every read is checked against the history of acknowledged writes
(:func:`tests.distributed.history.check`): no response is a server error, no read is older
than its bound, and the hubs' buses end up connected (to the new primary).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from freshkeep.demo.summary import SUMMARY_POLICY
from tests.distributed.cluster import (
    RESYNC_INTERVAL,
    SLACK,
    Cluster,
    Database,
    Namespace,
    new_namespace,
    stats,
    wait_for,
)
from tests.distributed.history import Load, check
from tests.redis_servers import Cluster as RedisCluster
from tests.redis_servers import SentinelSet, Servers, start_cluster, start_sentinels

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

DURATION = 12.0
"""Seconds of load."""
FAIL_AT = 3.0
"""Seconds into the load when the primary fails."""
WRITERS, WRITE_INTERVAL = 1, 0.2
READERS, READ_INTERVAL = 4, 0.01
TOKEN_EVERY = 3
PING_INTERVAL = 1.0
"""``FRESHKEEP_BUS_PING_INTERVAL``: how often a bus asks the Sentinels which is the primary."""


async def fail(s: SentinelSet, how: str, events: dict[str, Any]) -> None:
    await asyncio.sleep(FAIL_AT)
    old = s.primary_port()
    started = time.monotonic()
    if how == "failover":
        s.failover()
    else:
        s.primary.kill()

    async def switched() -> bool:
        return s.primary_port() != old

    await wait_for("the Sentinels naming a new primary", switched, timeout=30.0)
    events["new_primary_after_s"] = round(time.monotonic() - started, 3)


@pytest.mark.parametrize("how", ["failover", "kill"])
async def test_a_failover_under_load_gives_no_error_and_no_read_beyond_its_bound(
    database: Database, http: httpx.AsyncClient, tmp_path: Path, how: str
) -> None:
    servers = Servers(tmp_path / "redis")
    try:
        sentinels = start_sentinels(servers)
        events: dict[str, Any] = {}
        failure = fail(sentinels, how, events)
        name = f"sentinel-{how}"
        report = await run_load(database, http, tmp_path, sentinels.url, name, failure, events)
        assert "new_primary_after_s" in report["events"], report["events"]
        for name, bus in report["buses"].items():  # each bus followed the primary
            assert bus["reconnects"] >= 1, (name, bus)
    finally:
        servers.stop()


async def kill_master(c: RedisCluster, channel: str, events: dict[str, Any]) -> None:
    """Kill the master that owns the bus's channel, and wait for its replica to take over."""
    await asyncio.sleep(FAIL_AT)
    victim = c.owner(channel)
    assert victim is not None
    started = time.monotonic()
    victim.kill()

    async def taken_over() -> bool:
        return c.owner(channel) not in (None, victim)

    await wait_for("a replica taking over", taken_over, timeout=30.0)
    events["new_master_after_s"] = round(time.monotonic() - started, 3)


@pytest.mark.parametrize("how", ["steady", "kill-master"])
async def test_hubs_on_a_redis_cluster_keep_every_read_within_its_bound(
    database: Database, http: httpx.AsyncClient, tmp_path: Path, how: str
) -> None:
    servers = Servers(tmp_path / "redis")
    try:
        c = start_cluster(servers, replicas=0 if how == "steady" else 1)
        ns = new_namespace(c.url)
        events: dict[str, Any] = {}
        failure = kill_master(c, ns.channel, events) if how == "kill-master" else None
        report = await run_load(
            database, http, tmp_path, c.url, f"cluster-{how}", failure, events, ns=ns
        )
        for name, store in report["stores"].items():  # entries went to the cluster
            assert store["stored"] > 0, (name, store)
        assert sum(m.client().dbsize() for m in c.masters) > 0
        if failure is not None:
            assert "new_master_after_s" in report["events"], report["events"]
            for name, bus in report["buses"].items():  # each bus followed the channel
                assert bus["reconnects"] >= 1, (name, bus)
    finally:
        servers.stop()


async def run_load(
    database: Database,
    http: httpx.AsyncClient,
    tmp_path: Path,
    redis_url: str,
    name: str,
    failure: Coroutine[Any, Any, None] | None = None,
    events: dict[str, Any] | None = None,
    *,
    ns: Namespace | None = None,
) -> dict[str, Any]:
    """Two hubs on ``redis_url`` (store and bus) under the load, with ``failure`` running
    alongside (it notes what happened in ``events``); check the reads and return the report."""
    cluster = Cluster(database, ns or new_namespace(redis_url), tmp_path, http)
    try:
        extra = {"FRESHKEEP_BUS_PING_INTERVAL": str(PING_INTERVAL)}
        hubs = [await cluster.start(seed_tasks=30, extra=extra), await cluster.start(extra=extra)]
        load = Load(http, hubs)
        await asyncio.gather(
            load.run(
                DURATION,
                writers=WRITERS,
                write_interval=WRITE_INTERVAL,
                readers=READERS,
                read_interval=READ_INTERVAL,
                token_every=TOKEN_EVERY,
            ),
            failure if failure is not None else asyncio.sleep(0),
        )
        fresh_bound = RESYNC_INTERVAL + SLACK
        stale_bound = SUMMARY_POLICY.max_stale + RESYNC_INTERVAL + SLACK
        report = check(
            load,
            fresh_bound=fresh_bound,
            stale_bound=stale_bound,
            settings={
                "redis": name,
                "hubs": len(hubs),
                "duration_s": DURATION,
                "fail_at_s": FAIL_AT if failure is not None else None,
                "bus_ping_interval_s": PING_INTERVAL,
                "fresh_bound_s": fresh_bound,
                "stale_bound_s": stale_bound,
            },
        )
        report["events"] = events or {}
        hub_stats = {h.name: await stats(http, h) for h in hubs}
        report["buses"] = {
            n: {k: st["bus"][k] for k in ("connected", "reconnects", "errors")}
            for n, st in hub_stats.items()
        }
        report["stores"] = {
            n: {k: st["shared"][k] for k in ("reachable", "outages", "errors", "stored")}
            for n, st in hub_stats.items()
        }
    finally:
        cluster.stop()
    text = json.dumps(report, indent=1)
    print(f"\n{name} report: {text}")
    (tmp_path / f"{name}.json").write_text(text)
    assert report["responses_5xx"] == 0 and report["failed_writes"] == 0, report
    assert report["transport_errors"] == 0, report
    # Enough writes and reads for the check to mean something, even on a busy machine.
    assert report["writes"] >= 10 and report["reads"] >= 50, report
    assert report["bound_violation_count"] == 0, report["bound_violations"]
    assert report["token_violation_count"] == 0, report["token_violations"]
    assert report["revision_violation_count"] == 0, report["revision_violations"]
    for n, bus in report["buses"].items():
        assert bus["connected"], (n, bus)
    return report
