"""Hub B applies the changed rows hub A's bus messages carry to its summary's progress tail (a
delta), and rebuilds it when a message carries none (A's Core UPDATE, a trigger's) or when one
was lost (a commit that moved the revision without a message); what B serves equals a rebuild.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.distributed.cluster import (
    RESYNC_INTERVAL,
    SLACK,
    Cluster,
    Hub,
    post_progress,
    stats,
    summary,
    wait_for,
    wait_until_newest,
)

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.redis]

WAIT = RESYNC_INTERVAL + SLACK + 5


async def _progress(http: httpx.AsyncClient, hub: Hub) -> dict[str, Any]:
    """Hub's counters of its summary's progress section, and its messages with rows."""
    s = await stats(http, hub)
    view = s["views"]["summary"]
    return {
        "builds": view["builds"].get("progress", 0),
        "deltas": view["deltas"].get("progress", 0),
        "fallbacks": dict(view["delta_fallbacks"]),
        "remote_changes": s["remote_changes"],
    }


async def _equals_a_rebuild(http: httpx.AsyncClient, hub: Hub) -> None:
    served = (await summary(http, hub)).json()["recent_progress"]
    rebuilt = (await summary(http, hub, params={"refresh": "true"})).json()["recent_progress"]
    assert served == rebuilt


@pytest.mark.parametrize("bus", ["redis", "postgres"])
async def test_b_applies_a_rows_and_rebuilds_on_a_gap(
    cluster: Cluster, http: httpx.AsyncClient, bus: str
) -> None:
    a = await cluster.start(seed_tasks=30, bus=bus)
    b = await cluster.start(bus=bus)
    topic = (await http.post(f"{a.base_url}/topics", json={"name": "Cross"})).json()["id"]
    ws = await http.post(f"{a.base_url}/workstreams", json={"topic_id": topic, "name": "W"})
    task = await http.post(
        f"{a.base_url}/tasks", json={"workstream_id": ws.json()["id"], "title": "T"}
    )
    task_id = task.json()["id"]
    w = await post_progress(http, a, "first", topic_id=topic)
    await wait_until_newest(http, b, w.id, since=w.acked, timeout=WAIT)  # B holds an entry

    # ORM writes on A: their messages carry the rows, B applies them and builds nothing.
    before = await _progress(http, b)
    for i in range(3):
        w = await post_progress(http, a, f"applied {i}", topic_id=topic)
        await wait_until_newest(http, b, w.id, since=w.acked, timeout=WAIT)
    after = await _progress(http, b)
    assert after["builds"] == before["builds"], (before, after)
    assert after["deltas"] >= before["deltas"] + 1, (before, after)
    assert after["remote_changes"] >= before["remote_changes"] + 3, (before, after)
    await _equals_a_rebuild(http, b)

    # A's own rows, then a Core UPDATE of the events (deleting a task they show): the message
    # cannot vouch for the events' rows, B rebuilds the tail.
    r = await http.post(
        f"{a.base_url}/progress",
        json={"topic_id": topic, "task_id": task_id, "event_type": "note"}
        | {"summary": "on the task", "author": "x"},
    )
    await wait_until_newest(http, b, r.json()["id"], since=0.0, timeout=1e9)
    before = await _progress(http, b)
    assert (await http.delete(f"{a.base_url}/tasks/{task_id}")).status_code == 204

    async def task_gone() -> bool:
        return (await summary(http, b)).json()["recent_progress"][0]["task"] is None

    await wait_for("B shows the event without its task", task_gone, timeout=WAIT)
    after = await _progress(http, b)
    assert after["builds"] == before["builds"] + 1, (before, after)
    await _equals_a_rebuild(http, b)

    # A shell's INSERT: the trigger moves the revision (its message, if B hears it, has no
    # rows): B rebuilds.
    conn = cluster.db.connect()
    try:
        before = await _progress(http, b)
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO progress_events (topic_id, event_type, summary, author, created_at)"
                " VALUES (%s, 'note', 'from a shell', 'sh', now() AT TIME ZONE 'utc')"
                " RETURNING id",
                (topic,),
            )
            shell_id = cur.fetchone()[0]
        await wait_until_newest(http, b, shell_id, since=0.0, timeout=1e9)
        after = await _progress(http, b)
        assert after["builds"] == before["builds"] + 1, (before, after)

        # A lost message: a commit that moves the revision and adds an event, unheard (no
        # trigger fires); A's next message carries its own rows, yet B sees the gap.
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SET LOCAL session_replication_role = replica")
            cur.execute(
                "INSERT INTO progress_events (topic_id, event_type, summary, author, created_at)"
                " VALUES (%s, 'note', 'unheard', 'sh', now() AT TIME ZONE 'utc')",
                (topic,),
            )
            cur.execute(
                "UPDATE freshkeep_revisions SET revision = revision + 1"
                " WHERE source = 'table:progress_events'"
            )
            cur.execute("COMMIT")
    finally:
        conn.close()
    before = await _progress(http, b)
    w = await post_progress(http, a, "after the gap", topic_id=topic)
    await wait_until_newest(http, b, w.id, since=w.acked, timeout=WAIT)
    after = await _progress(http, b)
    assert after["builds"] == before["builds"] + 1, (before, after)
    assert after["fallbacks"].get("gap", 0) > before["fallbacks"].get("gap", 0), (before, after)
    served = (await summary(http, b)).json()["recent_progress"]
    assert [e["summary"] for e in served[:2]] == ["after the gap", "unheard"]
    await _equals_a_rebuild(http, b)
