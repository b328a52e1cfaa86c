"""The hub's export GC of one topic, raced by writes to that topic, their prebuild jobs and
reads of its export: shared by the SQLite (acceptance) and PostgreSQL (integration) tests.

Not a test module.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from freshkeep.artifacts import artifact_objects_table, artifacts_table
from freshkeep.demo.hub import Hub

TOKEN = "export-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"accept": "application/json"}
TTL = 2.0
"""The export TTL of the race: longer than a read takes to fetch its URL."""
GRACE = 0.05
"""The orphan grace of the race: GC races every build."""


async def rows(hub: Hub) -> dict[str, str]:
    """Each export key's object id."""
    t = artifacts_table
    async with hub.engine.connect() as conn:
        found = await conn.execute(
            select(t.c.key, t.c.artifact_id).where(t.c.cache == hub.exports.cache.name)
        )
        return {k: i for k, i in found}


async def object_rows(hub: Hub) -> set[str]:
    o = artifact_objects_table
    async with hub.engine.connect() as conn:
        found = await conn.execute(
            select(o.c.artifact_id).where(o.c.cache == hub.exports.cache.name)
        )
        return {i for (i,) in found}


async def stored(hub: Hub) -> set[str]:
    found, _ = await hub.exports.cache.storage.list_objects(hub.exports.cache.name)
    return {o.id for o in found}


async def race_topic_gc(http: httpx.AsyncClient, hub: Hub, topic: int, other: int) -> None:
    """Writers to ``topic`` (each enqueues a prebuild), readers of its export, and a loop of
    ``POST /admin/exports/gc?topic=…`` run together; ``other``'s export is built before and
    must come through untouched. Every read's bundle is served; at the end every row's object
    is stored, every stored object is known to the index, and once everything expired the
    topic's GC leaves no row of it."""
    r = await http.get(f"/topics/{other}/export", headers=JSON)
    assert r.status_code == 200, r.text
    other_key = r.json()["key"]
    stop = asyncio.Event()
    gc_runs: list[dict[str, Any]] = []
    served: list[int] = []

    async def collector() -> None:
        while not stop.is_set():
            r = await http.post("/admin/exports/gc", params={"topic": topic}, headers=AUTH)
            assert r.status_code == 200, r.text
            gc_runs.append(r.json())
            await asyncio.sleep(0.01)

    async def writer(n: int) -> None:
        for i in range(6):
            body = {"topic_id": topic, "title": f"decision {n}.{i}"}
            r = await http.post("/decisions", json=body)
            assert r.status_code == 201, r.text
            await asyncio.sleep(0.03)

    async def reader() -> None:
        for _ in range(8):
            r = await http.get(f"/topics/{topic}/export")
            assert r.status_code == 307, r.text
            got = await http.get(r.headers["location"])
            served.append(got.status_code)
            await asyncio.sleep(0.05)

    gc_task = asyncio.create_task(collector())
    try:
        await asyncio.gather(writer(1), writer(2), reader(), reader())
        await hub.exports.queue.drain()
    finally:
        stop.set()
        await gc_task
    assert served == [200] * len(served) and len(served) == 16
    assert len(gc_runs) > 3 and all(g["prefix"] == f"{topic}@" for g in gc_runs)
    assert hub.exports.cache.stats.failed == 0
    found = await rows(hub)
    assert set(found.values()) <= await stored(hub)
    assert await stored(hub) <= await object_rows(hub)

    await asyncio.sleep(TTL + GRACE + 0.1)  # every export of the topic expired
    r = await http.post("/admin/exports/gc", params={"topic": topic}, headers=AUTH)
    assert r.status_code == 200, r.text
    left = await rows(hub)
    assert not any(k.startswith(f"{topic}@") for k in left)
    assert other_key in left  # another topic's expired export is not this GC's
    assert left[other_key] in await stored(hub)
    assert await stored(hub) <= await object_rows(hub)
