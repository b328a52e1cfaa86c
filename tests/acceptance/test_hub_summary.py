"""GET /state/summary of the reference hub, through HTTP: statuses, headers, and what rebuilds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import HubClient, running_hub


async def _some_task(hub: HubClient) -> dict[str, Any]:
    """A seeded task whose status is not ``blocked`` (so blocking it is a change)."""
    for task_id in range(1, 50):
        r = await hub.http.get(f"/tasks/{task_id}")
        if r.status_code == 200 and r.json()["status"] != "blocked":
            task: dict[str, Any] = r.json()
            return task
    raise AssertionError("no seeded task found")


async def test_first_read_is_a_miss_then_hits_with_the_same_revision(hub: HubClient) -> None:
    r1 = await hub.summary()
    assert r1.status_code == 200
    assert r1.headers["content-type"] == "application/json"
    assert r1.headers["x-freshkeep-cache"] == "miss"
    assert r1.headers["cache-status"] == "freshkeep; fwd=miss; stored"
    revision = r1.headers["x-freshkeep-revision"]
    assert "table:tasks=" in revision and "table:progress_events=" in revision
    assert r1.headers["etag"].startswith('W/"')
    r2 = await hub.summary()
    assert r2.headers["x-freshkeep-cache"] == "hit"
    assert r2.headers["cache-status"] == "freshkeep; hit"
    assert r2.headers["x-freshkeep-revision"] == revision
    assert r2.headers["etag"] == r1.headers["etag"]
    assert r2.content == r1.content
    assert hub.builds() == {"core": 1, "progress": 1}


async def test_summary_content(hub: HubClient) -> None:
    body = (await hub.summary()).json()
    assert set(body) >= {"generated_at", "totals", "topics", "blocking_decisions"}
    assert set(body) >= {"recent_progress"}
    totals = body["totals"]
    assert totals["tasks"] == 200 and totals["topics"] == len(body["topics"]) >= 5
    assert sum(totals["tasks_by_status"].values()) == 200
    assert sum(t["tasks"]["total"] for t in body["topics"]) == 200
    assert sum(t["workstreams"] for t in body["topics"]) == totals["workstreams"]
    assert all(d["title"] and d["topic"] for d in body["blocking_decisions"])
    events = body["recent_progress"]
    assert len(events) == 20
    stamps = [e["created_at"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    with_task = [e for e in events if e["task"] is not None]
    assert with_task and all({"id", "title", "status"} <= set(e["task"]) for e in with_task)


async def test_refresh_and_no_cache_force_a_rebuild(hub: HubClient) -> None:
    first = await hub.summary()
    r = await hub.summary(params={"refresh": "true"})
    assert r.headers["x-freshkeep-cache"] == "miss"
    assert r.headers["cache-status"] == "freshkeep; fwd=request; stored"
    assert hub.builds() == {"core": 2, "progress": 2}
    # Another anonymous forced refresh within client_refresh_interval: a validated read.
    r = await hub.summary(headers={"Cache-Control": "no-cache"})
    assert r.headers["x-freshkeep-cache"] == "hit"
    assert hub.builds() == {"core": 2, "progress": 2}
    hub.hub.summary.client_refresh_interval = 0  # past the interval: it forces one again
    r = await hub.summary(headers={"Cache-Control": "no-cache"})
    assert r.headers["x-freshkeep-cache"] == "miss"
    assert hub.builds() == {"core": 3, "progress": 3}
    # Nothing changed: the same revisions, so the same ETag.
    assert r.headers["etag"] == first.headers["etag"]
    assert (await hub.summary()).headers["x-freshkeep-cache"] == "hit"


async def test_anonymous_forced_refreshes_are_limited_and_the_admin_token_always_forces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHKEEP_ADMIN_TOKEN", "admin-secret")
    async with running_hub(tmp_path / "hub.db", seed_tasks=50) as hub:
        await hub.summary()
        before = sum(hub.builds().values())
        statuses = await asyncio.gather(
            *(hub.summary(params={"refresh": "1"}) for _ in range(10)),
            *(hub.summary(headers={"Cache-Control": "no-cache"}) for _ in range(10)),
        )
        assert all(r.status_code == 200 for r in statuses)
        rebuilds = (sum(hub.builds().values()) - before) // 2  # two sections per rebuild
        assert rebuilds <= 2, rebuilds
        admin = {"Authorization": "Bearer admin-secret"}
        for _ in range(3):
            r = await hub.summary(params={"refresh": "1"}, headers=admin)
            assert r.headers["x-freshkeep-cache"] == "miss"
        wrong = {"Authorization": "Bearer not-it"}
        r = await hub.summary(params={"refresh": "1"}, headers=wrong)
        assert r.headers["x-freshkeep-cache"] == "hit"


async def test_if_none_match_answers_304_without_building(hub: HubClient) -> None:
    etag = (await hub.summary()).headers["etag"]
    builds = hub.builds()
    r = await hub.summary(headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag
    assert hub.builds() == builds
    stats = (await hub.http.get("/state/stats")).json()
    assert stats["views"]["summary"]["builds"] == builds
    # After a write the old ETag is no longer current: a full answer, the new event applied
    # to the progress tail (a delta), nothing rebuilt.
    note = {"topic_id": 1, "event_type": "note", "summary": "x", "author": "a"}
    await hub.post("/progress", note)
    deltas = hub.hub.summary.stats.deltas.get("progress", 0)
    r = await hub.summary(headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] != etag
    assert hub.builds() == builds
    assert hub.hub.summary.stats.deltas["progress"] == deltas + 1


async def test_new_progress_event_rebuilds_only_the_progress_section(hub: HubClient) -> None:
    task = await _some_task(hub)
    before = await hub.summary()
    core_builds = hub.builds()["core"]
    event = await hub.post(
        "/progress",
        {"topic_id": task["topic_id"], "task_id": task["id"], "event_type": "status_change"}
        | {"summary": "Ready for review", "author": "Ada Lovelace"},
    )
    r = await hub.summary()
    assert r.headers["x-freshkeep-cache"] == "section"
    assert r.headers["cache-status"] == "freshkeep; fwd=partial; stored"
    assert r.headers["x-freshkeep-revision"] != before.headers["x-freshkeep-revision"]
    assert r.headers["etag"] != before.headers["etag"]
    body = r.json()
    newest = body["recent_progress"][0]
    assert newest["id"] == event["id"] and newest["summary"] == "Ready for review"
    assert newest["task"] == {"id": task["id"], "title": task["title"], "status": task["status"]}
    assert len(body["recent_progress"]) == 20
    assert body["recent_progress"][1:] == before.json()["recent_progress"][:19]
    assert hub.builds()["core"] == core_builds
    # The core part of the body is the one built before.
    assert body["generated_at"] == before.json()["generated_at"]
    assert body["totals"] == before.json()["totals"]
    assert (await hub.summary()).headers["x-freshkeep-cache"] == "hit"


async def test_patching_a_task_applies_it_to_the_core_and_the_tail(hub: HubClient) -> None:
    topic = await hub.post("/topics", {"name": "Patch me"})
    ws = await hub.post("/workstreams", {"topic_id": topic["id"], "name": "Backend"})
    task = await hub.post("/tasks", {"workstream_id": ws["id"], "title": "Old", "status": "todo"})
    await hub.post(
        "/progress",
        {"topic_id": topic["id"], "task_id": task["id"], "event_type": "note"}
        | {"summary": "started", "author": "Ben"},
    )
    before = (await hub.summary()).json()
    builds = hub.builds()
    r = await hub.http.patch(f"/tasks/{task['id']}", json={"status": "blocked", "title": "New"})
    assert r.status_code == 200
    assert r.json()["status"] == "blocked" and r.json()["title"] == "New"
    deltas = dict(hub.hub.summary.stats.deltas)
    r = await hub.summary()
    assert r.headers["x-freshkeep-cache"] == "miss"
    # Both sections apply the task's changed row (a delta): nothing is rebuilt.
    assert r.headers["x-freshkeep-reason"] == "delta"
    assert hub.builds() == builds
    assert hub.hub.summary.stats.deltas == {
        "core": deltas.get("core", 0) + 1,
        "progress": deltas.get("progress", 0) + 1,
    }
    body = r.json()
    # The progress tail shows the task as it is now (it joins tasks).
    assert body["recent_progress"][0]["task"] == {"id": task["id"], "title": "New"} | {
        "status": "blocked"
    }
    blocked = before["totals"]["tasks_by_status"]["blocked"] + 1
    assert body["totals"]["tasks_by_status"]["blocked"] == blocked
    mine = next(t for t in body["topics"] if t["id"] == topic["id"])
    assert mine["tasks"] == {"todo": 0, "progress": 0, "blocked": 1, "done": 0, "total": 1}


async def test_patch_that_changes_nothing_keeps_the_entry(hub: HubClient) -> None:
    task = await _some_task(hub)
    await hub.summary()
    r = await hub.http.patch(f"/tasks/{task['id']}", json={"status": task["status"]})
    assert r.status_code == 200 and r.json()["updated_at"] == task["updated_at"]
    assert (await hub.summary()).headers["x-freshkeep-cache"] == "hit"


async def test_deleting_a_task_applies_it_to_the_core_and_changes_totals(hub: HubClient) -> None:
    before = (await hub.summary()).json()
    events = [e for e in before["recent_progress"] if e["task"] is not None]
    victim = events[0]["task"]["id"] if events else 1
    builds = hub.builds()
    r = await hub.http.delete(f"/tasks/{victim}")
    assert r.status_code == 204 and r.content == b""
    r = await hub.summary()
    assert r.headers["x-freshkeep-cache"] == "miss"
    # The task, its comments and labels were deleted through the ORM: the core applies them.
    assert hub.builds() == {"core": builds["core"], "progress": builds["progress"] + 1}
    assert hub.hub.summary.stats.deltas["core"] >= 1
    body = r.json()
    assert body["totals"]["tasks"] == before["totals"]["tasks"] - 1
    assert all(e["task"] is None or e["task"]["id"] != victim for e in body["recent_progress"])
    assert (await hub.http.get(f"/tasks/{victim}")).status_code == 404
    assert (await hub.http.delete(f"/tasks/{victim}")).status_code == 404


async def test_concurrent_cold_reads_build_once(hub: HubClient) -> None:
    responses = await asyncio.gather(*(hub.summary() for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.headers["etag"] for r in responses}) == 1
    assert hub.builds() == {"core": 1, "progress": 1}


async def test_empty_database(empty_hub: HubClient) -> None:
    hub = empty_hub
    r = await hub.summary()
    assert r.headers["x-freshkeep-cache"] == "miss"
    body = r.json()
    assert body["recent_progress"] == [] and body["topics"] == []
    assert body["blocking_decisions"] == []
    totals = body["totals"]
    assert {k: v for k, v in totals.items() if isinstance(v, int) and v} == {}
    assert set(totals) >= {"topics", "workstreams", "tasks", "decisions"}
    assert totals["tasks_by_status"] == {"todo": 0, "progress": 0, "blocked": 0, "done": 0}
    view = hub.hub.summary
    core_sources = view.sections["core"].sources
    assert len(core_sources) >= 10 and "table:progress_events" not in core_sources
    assert set(view.sections["progress"].sources) == {
        "table:progress_events",
        "table:tasks",
        "table:topics",
    }
    entry = view.peek()
    assert entry is not None
    fingerprint = entry.sections["core"].fingerprint
    assert len(fingerprint) == len(core_sources) > 0
    assert set(fingerprint) == {0}
    again = await hub.summary()  # built from never-written tables, and still a cache entry
    assert again.headers["x-freshkeep-cache"] == "hit" and again.content == r.content
    # From nothing to a first event, through the API.
    topic = await hub.post("/topics", {"name": "First"})
    ws = await hub.post("/workstreams", {"topic_id": topic["id"], "name": "API"})
    task = await hub.post("/tasks", {"workstream_id": ws["id"], "title": "Start", "status": "todo"})
    await hub.post(
        "/progress",
        {"topic_id": topic["id"], "task_id": task["id"], "event_type": "note"}
        | {"summary": "kick-off", "author": "Eva"},
    )
    body = (await hub.summary()).json()
    assert body["totals"]["tasks"] == 1 and body["totals"]["topics"] == 1
    assert [e["summary"] for e in body["recent_progress"]] == ["kick-off"]
    assert body["recent_progress"][0]["topic"] == "First"
