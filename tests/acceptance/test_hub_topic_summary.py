"""GET /topics/{id}/summary of the reference hub, through HTTP: a keyed view whose entries depend
on their own topic's rows only, so a write to one topic leaves the others' entries hits.

The same scenario across two hub processes on PostgreSQL and Redis is in
tests/distributed/test_topic_summary.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from freshkeep.demo.api import ENDPOINTS
from freshkeep.demo.models import TASK_STATUSES
from freshkeep.demo.topics import RECENT_PROGRESS
from tests.acceptance.conftest import HubClient

CACHE = "x-freshkeep-cache"
REBUILT = ("miss", "section")


async def read(hub: HubClient, topic: int, **kw: Any) -> httpx.Response:
    r = await hub.http.get(f"/topics/{topic}/summary", **kw)
    assert r.status_code in (200, 304), r.text
    return r


async def statuses(hub: HubClient, *topics: int) -> dict[int, str]:
    """The cache status of one read of each topic's summary."""
    return {t: (await read(hub, t)).headers[CACHE] for t in topics}


def builds(hub: HubClient) -> int:
    return sum(hub.hub.topic_summary.stats.builds.values())


@dataclass
class Two:
    """Two topics with one workstream each, both summaries read once (entries exist)."""

    hub: HubClient
    t1: int
    t2: int
    w1: int
    w2: int


@pytest.fixture
async def two(empty_hub: HubClient) -> Two:
    hub = empty_hub
    t1 = (await hub.post("/topics", {"name": "Search", "description": "faster search"}))["id"]
    t2 = (await hub.post("/topics", {"name": "Billing"}))["id"]
    w1 = (await hub.post("/workstreams", {"topic_id": t1, "name": "Index"}))["id"]
    w2 = (await hub.post("/workstreams", {"topic_id": t2, "name": "Invoices"}))["id"]
    assert await statuses(hub, t1, t2) == {t1: "miss", t2: "miss"}
    assert await statuses(hub, t1, t2) == {t1: "hit", t2: "hit"}
    return Two(hub, t1, t2, w1, w2)


def total(body: dict[str, Any]) -> int:
    n: int = body["tasks"]["total"]
    return n


async def test_the_value_of_a_topic(two: Two) -> None:
    hub = two.hub
    task = await hub.post("/tasks", {"workstream_id": two.w1, "title": "Shard", "status": "done"})
    await hub.post("/tasks", {"workstream_id": two.w1, "title": "Merge", "status": "blocked"})
    await hub.post("/decisions", {"topic_id": two.t1, "title": "Engine?", "blocking": True})
    await hub.post("/decisions", {"topic_id": two.t1, "title": "Drop v1", "status": "decided"})
    await hub.post("/decisions", {"topic_id": two.t1, "title": "Later", "blocking": False})
    for i in range(RECENT_PROGRESS + 2):
        note = {"topic_id": two.t1, "event_type": "note", "summary": f"n{i}", "author": "a"}
        await hub.post("/progress", note | ({"task_id": task["id"]} if i == 0 else {}))
    body = (await read(hub, two.t1)).json()
    assert body["topic"] == {"id": two.t1, "name": "Search", "description": "faster search"}
    zeros = dict.fromkeys(TASK_STATUSES, 0)
    counts = zeros | {"done": 1, "blocked": 1, "total": 2}
    assert body["workstreams"] == [
        {"id": two.w1, "name": "Index", "owner_id": None} | {"tasks": counts}
    ]
    assert body["tasks"] == counts
    decisions = body["decisions"]
    assert {k: decisions[k] for k in ("open", "decided", "blocking_open")} == {
        "open": 2,
        "decided": 1,
        "blocking_open": 1,
    }
    assert [d["title"] for d in decisions["blocking"]] == ["Engine?"]
    events = body["recent_progress"]
    assert [e["summary"] for e in events] == [f"n{i}" for i in reversed(range(2, 12))]
    assert set(events[0]) == {"id", "task_id", "event_type", "summary", "author", "created_at"}
    assert body["generated_at"]
    other = (await read(hub, two.t2)).json()
    assert other["tasks"] == zeros | {"total": 0} and other["recent_progress"] == []
    assert other["decisions"] == {"open": 0, "decided": 0, "blocking_open": 0, "blocking": []}


async def test_a_task_invalidates_the_topics_of_its_workstreams_only(two: Two) -> None:
    hub, t1, t2 = two.hub, two.t1, two.t2
    task = await hub.post("/tasks", {"workstream_id": two.w1, "title": "Shard"})
    r = await read(hub, t1)
    assert r.headers[CACHE] in REBUILT and total(r.json()) == 1
    assert r.json()["workstreams"][0]["tasks"]["todo"] == 1
    assert await statuses(hub, t1, t2) == {t1: "hit", t2: "hit"}

    r = await hub.http.patch(f"/tasks/{task['id']}", json={"status": "progress"})
    assert r.status_code == 200, r.text
    r = await read(hub, t1)
    assert r.headers[CACHE] in REBUILT and r.json()["tasks"]["progress"] == 1
    assert (await read(hub, t2)).headers[CACHE] == "hit"

    # moved to the other topic's workstream: both topics change
    r = await hub.http.patch(f"/tasks/{task['id']}", json={"workstream_id": two.w2})
    assert r.status_code == 200 and r.json()["topic_id"] == t2, r.text
    one, other = await read(hub, t1), await read(hub, t2)
    assert one.headers[CACHE] in REBUILT and total(one.json()) == 0
    assert other.headers[CACHE] in REBUILT and total(other.json()) == 1
    assert await statuses(hub, t1, t2) == {t1: "hit", t2: "hit"}

    # an event of the task in topic 2; then the task is deleted (the event loses its task)
    note = {"topic_id": t2, "task_id": task["id"], "event_type": "note", "summary": "s"}
    await hub.post("/progress", note | {"author": "a"})
    assert await statuses(hub, t1) == {t1: "hit"}
    assert (await read(hub, t2)).json()["recent_progress"][0]["task_id"] == task["id"]
    assert (await hub.http.delete(f"/tasks/{task['id']}")).status_code == 204
    r = await read(hub, t2)
    assert r.headers[CACHE] in REBUILT and total(r.json()) == 0
    assert r.json()["recent_progress"][0]["task_id"] is None
    assert (await read(hub, t1)).headers[CACHE] == "hit"


async def test_decisions_progress_and_workstreams_invalidate_their_topic_only(two: Two) -> None:
    hub, t1, t2 = two.hub, two.t1, two.t2
    await hub.post("/decisions", {"topic_id": t1, "title": "Engine?", "blocking": True})
    r = await read(hub, t1)
    assert r.headers[CACHE] in REBUILT and r.json()["decisions"]["blocking_open"] == 1
    assert (await read(hub, t2)).headers[CACHE] == "hit"

    await hub.post(
        "/progress", {"topic_id": t1, "event_type": "note", "summary": "s", "author": "a"}
    )
    r = await read(hub, t1)
    assert r.headers[CACHE] in REBUILT and r.json()["recent_progress"][0]["summary"] == "s"
    assert (await read(hub, t2)).headers[CACHE] == "hit"

    ws = await hub.post("/workstreams", {"topic_id": t1, "name": "Ranking"})
    r = await read(hub, t1)
    assert r.headers[CACHE] in REBUILT
    assert [w["name"] for w in r.json()["workstreams"]] == ["Index", "Ranking"]
    assert (await read(hub, t2)).headers[CACHE] == "hit"
    # the new workstream's tasks are the topic's: its partition was added to the entry
    await hub.post("/tasks", {"workstream_id": ws["id"], "title": "Boost"})
    r = await read(hub, t1)
    assert r.headers[CACHE] in REBUILT and r.json()["workstreams"][1]["tasks"]["total"] == 1
    assert (await read(hub, t2)).headers[CACHE] == "hit"

    await hub.post("/topics", {"name": "Third"})  # another topic's creation
    assert await statuses(hub, t1, t2) == {t1: "hit", t2: "hit"}


async def test_a_missing_topic_is_404_until_it_is_created(two: Two) -> None:
    hub = two.hub
    new = two.t2 + 1  # the id the next topic gets
    for status in ("miss", "hit"):  # the answer is cached like any other, and never a 200
        r = await hub.http.get(f"/topics/{new}/summary")
        assert r.status_code == 404 and r.json() == {"detail": f"topic {new} does not exist"}
        assert r.headers["content-type"] == "application/json" and "etag" not in r.headers
        assert r.headers[CACHE] == status
    r = await hub.http.get(f"/topics/{new}/summary", headers={"If-None-Match": "*"})
    assert r.status_code == 404  # "*" matches a topic that exists, and this one does not
    assert (await read(hub, two.t1, headers={"If-None-Match": "*"})).status_code == 304

    created = await hub.post("/topics", {"name": "Later"})
    assert created["id"] == new
    r = await read(hub, new)
    assert r.status_code == 200 and r.headers[CACHE] == "miss"
    assert r.json()["topic"]["name"] == "Later" and r.json()["workstreams"] == []
    assert await statuses(hub, two.t1, two.t2, new) == {two.t1: "hit", two.t2: "hit", new: "hit"}


@pytest.mark.parametrize("topic", ["1", "99", str(2**31 - 1)])
async def test_ids_no_topic_has_are_404(empty_hub: HubClient, topic: str) -> None:
    r = await empty_hub.http.get(f"/topics/{topic}/summary")
    assert r.status_code == 404 and r.json() == {"detail": f"topic {topic} does not exist"}


@pytest.mark.parametrize(
    "topic", ["abc", "1.5", "1e3", "0", "-3", str(2**31), str(2**63), str(10**30), str(-(10**30))]
)
async def test_an_id_that_is_no_id_is_422(empty_hub: HubClient, topic: str) -> None:
    r = await empty_hub.http.get(f"/topics/{topic}/summary")
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    (error,) = r.json()["detail"]
    assert error["loc"] == ["path", "topic_id"]


async def test_etag_304_and_refresh(two: Two) -> None:
    hub, t1 = two.hub, two.t1
    first = await read(hub, t1)
    etag = first.headers["etag"]
    assert etag.startswith('W/"') and "table:tasks/" in first.headers["x-freshkeep-revision"]
    n = builds(hub)
    r = await read(hub, t1, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    await hub.post("/tasks", {"workstream_id": two.w2, "title": "Elsewhere"})
    assert (await read(hub, t1, headers={"If-None-Match": etag})).status_code == 304
    assert builds(hub) == n  # neither conditional read built anything

    r = await read(hub, t1, params={"refresh": "true"})
    assert r.status_code == 200 and r.headers[CACHE] == "miss" and builds(hub) == n + 1
    assert r.headers["etag"] == etag  # rebuilt from the same revisions

    await hub.post("/tasks", {"workstream_id": two.w1, "title": "Here"})
    r = await read(hub, t1, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] != etag and total(r.json()) == 1


async def test_topic_summaries_agree_with_the_summary(hub: HubClient) -> None:
    summary = (await hub.summary()).json()
    assert summary["topics"]
    for topic in summary["topics"]:
        r = await read(hub, topic["id"])
        assert r.headers[CACHE] == "miss"
        body = r.json()
        assert body["topic"]["name"] == topic["name"]
        assert body["tasks"] == topic["tasks"]
        assert len(body["workstreams"]) == topic["workstreams"]
        assert sum(w["tasks"]["total"] for w in body["workstreams"]) == topic["tasks"]["total"]
        assert body["decisions"]["open"] == topic["open_decisions"]
        assert body["decisions"]["blocking_open"] == topic["blocking_decisions"]
    # the summary itself is served as before
    assert (await hub.summary()).headers[CACHE] == "hit"


async def test_listed_in_the_index_the_openapi_and_the_stats(two: Two) -> None:
    hub = two.hub
    assert ("GET", "/topics/{id}/summary") in {(m, p) for m, p, _ in ENDPOINTS}
    index = (await hub.http.get("/")).json()
    assert "/topics/{id}/summary" in {e["path"] for e in index["endpoints"]}
    spec = (await hub.http.get("/openapi.json")).json()
    responses = spec["paths"]["/topics/{topic_id}/summary"]["get"]["responses"]
    assert {"200", "304", "404", "422"} <= set(responses)
    view = (await hub.http.get("/state/stats")).json()["views"]["topic_summary"]
    assert view["reads"] == {"miss": 2, "hit": 2} and view["builds"] == {"topic": 2}
    assert view["policy"]["mode"] == "strict"
