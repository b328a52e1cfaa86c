"""Redis, then PostgreSQL, cut under hub processes: no read fails, and they recover by
themselves."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.distributed.cluster import (
    RESYNC_INTERVAL,
    SLACK,
    Cluster,
    host_port,
    post_progress,
    stats,
    summary,
    wait_for,
    wait_until_newest,
)
from tests.distributed.history import Load, check
from tests.proxy import CuttableProxy

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.redis]

BUS_BOUND = 1.0
OUTAGE = 4.0
"""Seconds the link is cut."""
LOCK_WAIT = 0.5
"""``FRESHKEEP_LOCK_WAIT`` of these hubs: during an outage the lock's store is unreachable and a
read builds locally at once; a short wait keeps the bounds below tight should Redis come back
while another instance holds a lock. Waits below are bounded by it plus the bound."""
RECOVERY = 10.0
"""Seconds within which a hub must notice an outage, or its end."""


async def _bus_connected(http: httpx.AsyncClient, hubs: list[Any], up: bool) -> bool:
    states = [(await stats(http, h))["bus"]["connected"] for h in hubs]
    return all(s is up for s in states)


async def test_a_redis_outage_under_load_fails_nothing_and_heals(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    proxy = CuttableProxy(host_port(REDIS_URL, 6379))
    port = await proxy.start()
    db = REDIS_URL.rsplit("/", 1)[1] if REDIS_URL.count("/") >= 3 else "0"
    via_proxy = f"redis://127.0.0.1:{port}/{db or 0}"
    try:
        extra = {"FRESHKEEP_LOCK_WAIT": str(LOCK_WAIT)}
        a = await cluster.start(seed_tasks=30, bus=via_proxy, store_url=via_proxy, extra=extra)
        b = await cluster.start(bus=via_proxy, store_url=via_proxy, extra=extra)
        hubs = [a, b]
        await wait_for("both buses up", lambda: _bus_connected(http, hubs, True), timeout=10)
        load = Load(http, hubs)
        timeline: dict[str, Any] = {}

        async def scenario() -> None:
            t0 = time.monotonic()
            await asyncio.sleep(2.0)  # load before the outage
            proxy.cut()
            timeline["cut_at"] = round(time.monotonic() - t0, 2)

            async def shown() -> bool:
                s = [await stats(http, h) for h in hubs]
                return all(
                    x["bus"]["connected"] is False and x["bus"]["last_outage_started_at"] for x in s
                ) and any(x["shared"]["reachable"] is False for x in s)

            await wait_for("the outage shows in /state/stats", shown, timeout=RECOVERY)
            timeline["during"] = {h.name: await stats(http, h) for h in hubs}
            # while the bus is down, B learns A's writes by the resync
            w = await post_progress(http, a, "during the outage")
            timeline["during_outage_ms"] = round(
                1000
                * await wait_until_newest(
                    http,
                    b,
                    w.id,
                    since=w.acked,
                    timeout=RESYNC_INTERVAL + SLACK + LOCK_WAIT,
                    newest=False,
                ),
                1,
            )
            await asyncio.sleep(max(0.0, t0 + 2.0 + OUTAGE - time.monotonic()))
            proxy.restore()
            timeline["restored_at"] = round(time.monotonic() - t0, 2)
            await wait_for(
                "both buses reconnect", lambda: _bus_connected(http, hubs, True), timeout=RECOVERY
            )
            timeline["reconnected_after_s"] = round(
                time.monotonic() - t0 - timeline["restored_at"], 2
            )
            before = (await stats(http, b))["remote_revisions"]
            lat = []
            for i in range(5):
                w = await post_progress(http, a, f"after the outage {i}")
                lat.append(
                    await wait_until_newest(
                        http, b, w.id, since=w.acked, timeout=BUS_BOUND + LOCK_WAIT, newest=False
                    )
                )
            timeline["after_ms"] = [round(x * 1000, 1) for x in lat]
            timeline["b_remote_revisions_after"] = (await stats(http, b))[
                "remote_revisions"
            ] - before

        await asyncio.gather(
            load.run(14.0, writers=1, write_interval=0.2, readers=2, read_interval=0.02),
            scenario(),
        )
        report = check(
            load,
            fresh_bound=RESYNC_INTERVAL + SLACK,
            stale_bound=30.0 + RESYNC_INTERVAL + SLACK,
            settings={"outage_s": OUTAGE},
        )
        after = {h.name: await stats(http, h) for h in hubs}
        during = timeline.pop("during")
        report["timeline"] = timeline
        keys = ("shared", "bus", "bus_down", "probes", "probe_errors")
        report["during"] = {n: {k: s.get(k) for k in keys} for n, s in during.items()}
        report["after"] = {n: {k: s.get(k) for k in keys} for n, s in after.items()}
        text = json.dumps(report, indent=1, default=str)
        print(f"\nredis outage: {text}")
        (tmp_path / "redis-outage.json").write_text(text)
        assert report["responses_5xx"] == 0 and report["failed_writes"] == 0, report
        assert report["transport_errors"] == 0, report
        assert report["token_violation_count"] == 0, report["token_violations"]
        assert report["revision_violation_count"] == 0, report["revision_violations"]
        assert timeline["b_remote_revisions_after"] >= 5  # over the bus again
        for name, s in after.items():
            assert s["bus"]["reconnects"] >= 1 and s["bus"]["last_outage_ended_at"], name
            assert s["shared"]["reachable"] is True, name
        assert any(s["shared"]["outages"] >= 1 for s in after.values())
        # while the bus is down every read probes the database; not once it is back
        assert all(s["bus_down"] is True for s in during.values()), report["during"]
        assert all(s["bus_down"] is False for s in after.values()), report["after"]
    finally:
        cluster.stop()
        await proxy.aclose()


async def test_postgres_cut_under_one_hub_serves_reads_and_fails_writes(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    proxy = CuttableProxy(host_port(POSTGRES_URL, 5432))
    port = await proxy.start()
    try:
        a = await cluster.start(seed_tasks=30)
        b = await cluster.start(db_url=cluster.db.url(port=port))
        await summary(http, b)
        w = await post_progress(http, a, "before the cut")
        await wait_until_newest(http, b, w.id, since=w.acked, timeout=BUS_BOUND)
        proxy.cut()
        statuses: dict[str, int] = {}
        reads = 0
        writes_on_b: list[int] = []
        deadline = time.monotonic() + 3 * RESYNC_INTERVAL
        w = await post_progress(http, a, "during the cut, on A")  # B hears it on the bus
        while time.monotonic() < deadline:
            r = await http.get(f"{b.base_url}/state/summary")
            reads += 1
            assert r.status_code == 200, (r.status_code, r.text)
            cache = r.headers["x-freshkeep-cache"]
            statuses[cache] = statuses.get(cache, 0) + 1
            # "section": B applied the rows A's message carried (a delta needs no database)
            assert cache in ("hit", "stale", "error-stale", "section"), cache
            if cache == "section":
                assert r.headers.get("x-freshkeep-reason") == "delta", dict(r.headers)
            if len(writes_on_b) < 3:
                body = {"topic_id": 1, "event_type": "note", "summary": "x", "author": "dist"}
                writes_on_b.append(
                    (await http.post(f"{b.base_url}/progress", json=body)).status_code
                )
            await asyncio.sleep(0.02)
        during = await stats(http, b)
        proxy.restore()

        async def write_ok() -> bool:
            body = {"topic_id": 1, "event_type": "note", "summary": "back", "author": "dist"}
            return (await http.post(f"{b.base_url}/progress", json=body)).status_code == 201

        t = time.monotonic()
        await wait_for("writes on B work again", write_ok, timeout=RECOVERY, interval=0.2)
        recovered = time.monotonic() - t
        w = await post_progress(http, a, "after the cut")
        await wait_until_newest(http, b, w.id, since=w.acked, timeout=BUS_BOUND + SLACK)
        report = {
            "reads_during_cut": reads,
            "cache_statuses": statuses,
            "writes_on_b_during_cut": writes_on_b,
            "probe_errors": during["probe_errors"],
            "view": {k: during["views"]["summary"][k] for k in ("reads", "build_errors")},
            "write_recovered_after_s": round(recovered, 2),
        }
        print(f"\npostgres cut under B: {json.dumps(report)}")
        (tmp_path / "postgres-cut.json").write_text(json.dumps(report, indent=2))
        assert all(s >= 500 for s in writes_on_b), writes_on_b
        assert statuses.get("error-stale", 0) + statuses.get("stale", 0) > 0, statuses
        assert during["probe_errors"] > 0
    finally:
        cluster.stop()
        await proxy.aclose()
