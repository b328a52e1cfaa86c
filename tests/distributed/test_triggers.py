"""Raw SQL on another connection (as psql would) reaches every hub through the triggers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.distributed.cluster import (
    POLL,
    RESYNC_INTERVAL,
    SLACK,
    Cluster,
    diagnose,
    stats,
    summary,
)

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.redis]

BUS_BOUND = 1.0


async def _wait_summary(
    http: httpx.AsyncClient, hub: Any, check: Any, *, since: float, timeout: float
) -> float:
    """Poll ``hub``'s summary until ``check(body)``; return the seconds since ``since``."""
    while True:
        body = (await summary(http, hub)).json()
        now = time.monotonic()
        if check(body):
            return now - since
        if now - since > timeout:
            raise AssertionError(
                f"hub {hub.name}: not served {now - since:.3f}s after the write: "
                f"{await diagnose(http, hub)}"
            )
        await asyncio.sleep(POLL)


@pytest.mark.parametrize("bus", ["postgres", "redis"])
async def test_raw_sql_writes_are_served_by_every_hub(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path, bus: str
) -> None:
    cluster.migrate()  # freshkeep's own tables first
    a = await cluster.start(seed_tasks=30, bus=bus)
    b = await cluster.start(bus=bus)
    out = cluster.migrate("--triggers", "progress_events,tasks", "--channel", cluster.ns.channel)
    assert "progress_events" in out and "tasks" in out, out
    # the postgres bus hears the triggers' NOTIFY; the redis bus does not: the resync does
    bound = BUS_BOUND if bus == "postgres" else RESYNC_INTERVAL + SLACK
    hubs = (a, b)
    for hub in hubs:
        await summary(http, hub)
    conn = cluster.db.connect()
    latencies: dict[str, list[float]] = {"insert": [], "update": []}
    try:
        with conn.cursor() as cur:
            for _ in range(3):
                text = f"raw {uuid.uuid4().hex[:8]}"
                cur.execute(
                    "INSERT INTO progress_events (topic_id, event_type, summary, author, "
                    "created_at) VALUES (1, 'note', %s, 'psql', now() AT TIME ZONE 'utc') "
                    "RETURNING id",
                    (text,),
                )
                row = cur.fetchone()
                assert row is not None
                event_id = row[0]
                since = time.monotonic()
                for hub in hubs:
                    latencies["insert"].append(
                        await _wait_summary(
                            http,
                            hub,
                            lambda body, e=event_id: body["recent_progress"][0]["id"] == e,
                            since=since,
                            timeout=bound,
                        )
                    )
                cur.execute("SELECT id FROM tasks WHERE status <> 'done' ORDER BY id LIMIT 1")
                row = cur.fetchone()
                assert row is not None
                before = (await summary(http, a)).json()["totals"]["tasks_by_status"]["done"]
                cur.execute("UPDATE tasks SET status = 'done' WHERE id = %s", (row[0],))
                since = time.monotonic()
                for hub in hubs:
                    latencies["update"].append(
                        await _wait_summary(
                            http,
                            hub,
                            lambda body, n=before: (
                                body["totals"]["tasks_by_status"]["done"] == n + 1
                            ),
                            since=since,
                            timeout=bound,
                        )
                    )
    finally:
        conn.close()
    b_stats = await stats(http, b)
    report = {
        "bus": bus,
        "bound_s": bound,
        "insert_ms": [round(x * 1000, 1) for x in latencies["insert"]],
        "update_ms": [round(x * 1000, 1) for x in latencies["update"]],
        "b_remote_revisions": b_stats["remote_revisions"],
    }
    print(f"\nraw SQL -> served, {bus} bus: {json.dumps(report)}")
    (tmp_path / f"triggers-{bus}.json").write_text(json.dumps(report, indent=2))
    if bus == "postgres":
        assert b_stats["remote_revisions"] >= 6  # the triggers' notifications
