"""GET /topics/{id}/summary across two hub processes on one PostgreSQL database and one Redis:
writes on A, reads on B. B hears of A's writes on the bus (asynchronously), and a write to one
topic leaves B's entries of the other topics hits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.distributed.cluster import POLL, RESYNC_INTERVAL, SLACK, Cluster, Hub, diagnose

pytestmark = [pytest.mark.distributed, pytest.mark.postgres, pytest.mark.redis]

CACHE = "x-freshkeep-cache"
SEEN_WITHIN = RESYNC_INTERVAL + SLACK + 3.0
"""Seconds a write on A may take to show on B (the bus delivers it well within this)."""


async def post(http: httpx.AsyncClient, hub: Hub, path: str, body: dict[str, Any]) -> Any:
    r = await http.post(f"{hub.base_url}{path}", json=body)
    assert r.status_code == 201, (path, r.status_code, r.text)
    return r.json()


async def read(http: httpx.AsyncClient, hub: Hub, topic: int) -> httpx.Response:
    r = await http.get(f"{hub.base_url}/topics/{topic}/summary")
    assert r.status_code == 200, (hub.name, topic, r.status_code, r.text)
    return r


async def status(http: httpx.AsyncClient, hub: Hub, topic: int) -> str:
    return (await read(http, hub, topic)).headers[CACHE]


async def wait_for(
    http: httpx.AsyncClient, hub: Hub, topic: int, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Poll ``hub``'s summary of ``topic`` until ``check(body)``; return that body."""
    deadline = time.monotonic() + SEEN_WITHIN
    while True:
        r = await read(http, hub, topic)
        body: dict[str, Any] = r.json()
        if check(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(
                f"hub {hub.name} did not show the write to topic {topic} within {SEEN_WITHIN}s "
                f"({r.headers[CACHE]}, {r.headers['x-freshkeep-revision']}): {body} "
                f"{await diagnose(http, hub)}"
            )
        await asyncio.sleep(POLL)


def total(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["tasks"]["total"] == n


async def test_a_write_on_a_invalidates_its_topic_only_on_b(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a = await cluster.start()
    b = await cluster.start()
    t1 = (await post(http, a, "/topics", {"name": "Search"}))["id"]
    t2 = (await post(http, a, "/topics", {"name": "Billing"}))["id"]
    w1 = (await post(http, a, "/workstreams", {"topic_id": t1, "name": "Index"}))["id"]
    w2 = (await post(http, a, "/workstreams", {"topic_id": t2, "name": "Invoices"}))["id"]
    for t in (t1, t2):  # B shows what A created, then serves it from its entry
        await wait_for(http, b, t, lambda body: len(body["workstreams"]) == 1)
        assert await status(http, b, t) == "hit"

    task = await post(http, a, "/tasks", {"workstream_id": w1, "title": "Shard"})
    await wait_for(http, b, t1, total(1))
    assert await status(http, b, t2) == "hit"

    r = await http.patch(f"{a.base_url}/tasks/{task['id']}", json={"workstream_id": w2})
    assert r.status_code == 200, r.text
    await wait_for(http, b, t1, total(0))
    await wait_for(http, b, t2, total(1))

    r = await http.delete(f"{a.base_url}/tasks/{task['id']}")
    assert r.status_code == 204, r.text
    await wait_for(http, b, t2, total(0))
    assert await status(http, b, t1) == "hit"

    await post(http, a, "/decisions", {"topic_id": t1, "title": "Engine?", "blocking": True})
    await wait_for(http, b, t1, lambda body: body["decisions"]["blocking_open"] == 1)
    assert await status(http, b, t2) == "hit"
    note = {"topic_id": t1, "event_type": "note", "summary": "shipped", "author": "a"}
    await post(http, a, "/progress", note)
    await wait_for(http, b, t1, lambda body: body["recent_progress"][0]["summary"] == "shipped")
    assert await status(http, b, t2) == "hit"

    # a topic B was asked for before it existed: 404, then served once A creates it
    new = t2 + 1
    assert (await http.get(f"{b.base_url}/topics/{new}/summary")).status_code == 404
    assert (await post(http, a, "/topics", {"name": "Later"}))["id"] == new
    await wait_for(http, b, new, lambda body: body["topic"]["name"] == "Later")
    assert {t: await status(http, b, t) for t in (t1, t2)} == {t1: "hit", t2: "hit"}


async def test_ids_postgresql_cannot_hold_are_422_and_the_largest_is_404(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    a = await cluster.start()
    for path in (f"/topics/{2**31}/summary", f"/topics/{10**30}/summary", f"/topics/{2**31}"):
        r = await http.get(f"{a.base_url}{path}")
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"] == ["path", "topic_id"], (path, r.text)
    r = await http.post(f"{a.base_url}/workstreams", json={"topic_id": 2**40, "name": "W"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "topic_id"], r.text
    for path in (f"/topics/{2**31 - 1}/summary", f"/topics/{2**31 - 1}"):
        r = await http.get(f"{a.base_url}{path}")  # in range: PostgreSQL is asked, no row
        assert r.status_code == 404 and "does not exist" in r.json()["detail"], (path, r.text)
    r = await http.post(f"{a.base_url}/workstreams", json={"topic_id": 2**31 - 1, "name": "W"})
    assert r.status_code == 404, r.text
