"""The reference hub's REST API, through HTTP: validation, unknown ids, OpenAPI, stats."""

from __future__ import annotations

from typing import Any

import pytest

from tests.acceptance.conftest import HubClient


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/topics", {"name": ""}),
        ("/topics", {"name": "   "}),
        ("/topics", {}),
        ("/topics", {"name": "x", "color": "red"}),  # unknown field
        ("/workstreams", {"topic_id": "one", "name": "API"}),
        ("/tasks", {"workstream_id": 1, "title": "T", "status": "doing"}),
        ("/tasks", {"workstream_id": 1, "status": "todo"}),
        ("/decisions", {"topic_id": 1, "title": "D", "status": "maybe"}),
        ("/decisions", {"topic_id": 1, "title": "D", "blocking": "sometimes"}),
        ("/progress", {"topic_id": 1, "event_type": "Not A Type!", "summary": "s", "author": "a"}),
        ("/progress", {"topic_id": 1, "event_type": "note", "summary": "", "author": "a"}),
        ("/progress", {"topic_id": 0, "event_type": "note", "summary": "s", "author": "a"}),
    ],
)
async def test_invalid_input_is_422_with_json(
    empty_hub: HubClient, path: str, body: dict[str, Any]
) -> None:
    r = await empty_hub.http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["detail"], list) and r.json()["detail"]


async def test_malformed_json_and_empty_patch_are_422(hub: HubClient) -> None:
    r = await hub.http.post(
        "/topics", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and "detail" in r.json()
    r = await hub.http.patch("/tasks/1", json={})
    assert r.status_code == 422 and "status or title" in r.text
    r = await hub.http.patch("/tasks/1", json={"status": "finished"})
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("method", "path", "body", "missing"),
    [
        ("POST", "/workstreams", {"topic_id": 999, "name": "API"}, "topic 999"),
        ("POST", "/tasks", {"workstream_id": 999, "title": "T"}, "workstream 999"),
        ("POST", "/decisions", {"topic_id": 999, "title": "D"}, "topic 999"),
        (
            "POST",
            "/progress",
            {"topic_id": 999, "event_type": "note", "summary": "s", "author": "a"},
            "topic 999",
        ),
        ("PATCH", "/tasks/999", {"status": "done"}, "task 999"),
        ("DELETE", "/tasks/999", None, "task 999"),
        ("GET", "/tasks/999", None, "task 999"),
        ("GET", "/topics/999", None, "topic 999"),
        ("GET", f"/topics/{2**31 - 1}", None, f"topic {2**31 - 1}"),  # the largest id
    ],
)
async def test_unknown_ids_are_404_naming_what_is_missing(
    empty_hub: HubClient, method: str, path: str, body: dict[str, Any] | None, missing: str
) -> None:
    r = await empty_hub.http.request(method, path, json=body)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": f"{missing} does not exist"}


async def test_progress_for_an_unknown_task_or_one_of_another_topic(hub: HubClient) -> None:
    note = {"event_type": "note", "summary": "s", "author": "a"}
    r = await hub.http.post("/progress", json={"topic_id": 1, "task_id": 10**6} | note)
    assert r.status_code == 404 and r.json() == {"detail": f"task {10**6} does not exist"}
    task = (await hub.http.get("/tasks/1")).json()
    other = 2 if task["topic_id"] == 1 else 1
    r = await hub.http.post("/progress", json={"topic_id": other, "task_id": 1} | note)
    assert r.status_code == 409 and f"belongs to topic {task['topic_id']}" in r.json()["detail"]


async def test_create_read_and_list(empty_hub: HubClient) -> None:
    hub = empty_hub
    topic = await hub.post("/topics", {"name": "  Search v2 ", "description": "faster"})
    assert topic["name"] == "Search v2" and topic["id"] >= 1 and topic["created_at"]
    r = await hub.http.post("/topics", json={"name": "Search v2"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    assert [t["name"] for t in (await hub.http.get("/topics")).json()] == ["Search v2"]
    assert (await hub.http.get(f"/topics/{topic['id']}")).json() == topic
    ws = await hub.post("/workstreams", {"topic_id": topic["id"], "name": "Backend"})
    assert ws["topic_id"] == topic["id"]
    task = await hub.post("/tasks", {"workstream_id": ws["id"], "title": "Index", "status": "todo"})
    assert task["status"] == "todo" and task["topic_id"] == topic["id"]
    assert (await hub.http.get(f"/tasks/{task['id']}")).json() == task
    decision = await hub.post(
        "/decisions",
        {"topic_id": topic["id"], "title": "Pick an engine", "status": "open", "blocking": True},
    )
    assert decision["blocking"] is True and decision["decided_at"] is None
    decided = await hub.post(
        "/decisions", {"topic_id": topic["id"], "title": "Drop v1", "status": "decided"}
    )
    assert decided["decided_at"] is not None
    event = await hub.post(
        "/progress",
        {"topic_id": topic["id"], "event_type": "release", "summary": "v2 beta", "author": "Li"},
    )
    assert event["task_id"] is None
    body = (await hub.summary()).json()
    assert body["totals"]["decisions"] == 2 and body["totals"]["open_decisions"] == 1
    assert [d["title"] for d in body["blocking_decisions"]] == ["Pick an engine"]
    (mine,) = body["topics"]
    assert mine["open_decisions"] == 1 and mine["blocking_decisions"] == 1
    assert body["recent_progress"][0]["task"] is None


async def test_openapi_describes_the_api(empty_hub: HubClient) -> None:
    r = await empty_hub.http.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    paths = spec["paths"]
    for path, methods in {
        "/state/summary": {"get"},
        "/state/stats": {"get"},
        "/topics": {"get", "post"},
        "/workstreams": {"post"},
        "/tasks": {"post"},
        "/tasks/{task_id}": {"get", "patch", "delete"},
        "/decisions": {"post"},
        "/progress": {"post"},
    }.items():
        assert methods <= set(paths[path]), path
    assert "304" in paths["/state/summary"]["get"]["responses"]
    assert "404" in paths["/tasks/{task_id}"]["patch"]["responses"]
    task_in = spec["components"]["schemas"]["TaskIn"]["properties"]["status"]
    assert set(task_in["enum"]) == {"todo", "progress", "blocked", "done"}


async def test_stats_and_index(hub: HubClient) -> None:
    await hub.summary()
    await hub.summary()
    stats = (await hub.http.get("/state/stats")).json()
    view = stats["views"]["summary"]
    assert view["reads"] == {"miss": 1, "hit": 1}
    assert view["builds"] == {"core": 1, "progress": 1}
    assert view["policy"] == {
        "mode": "swr",
        "max_stale": 30.0,
        "stale_if_error": 300.0,
        "max_age": 300.0,
    }
    assert "table:progress_events" in view["sources"] and stats["probe"] == "interval"
    # the typed snapshots keep the JSON's shape: the same keys as the dicts they replaced
    assert set(stats) == {
        "instance",
        "probe",
        "resync_interval",
        "probes",
        "commits",
        "remote_revisions",
        "probe_errors",
        "unattributed_writes",
        "remote_changes",
        "store",
        "shared",
        "bus",
        "bus_down",
        "views",
        "remotes",
        "notifiers",
        "artifacts",
    }
    assert set(view) == {
        "view",
        "sources",
        "policy",
        "reads",
        "builds",
        "build_seconds",
        "build_errors",
        "background_refreshes",
        "collapsed",
        "shared_hits",
        "shared_waits",
        "last_error",
        "last_error_at",
        "last_build_at",
        "failing_since",
        "in_flight",
        "partitions",
        "replica",
        "deltas",
        "delta_seconds",
        "delta_fallbacks",
    }
    assert set(stats["store"]) == {"entries", "bytes", "evictions", "rejected"}
    assert "name" not in stats["artifacts"]["topic-export"]
    index = (await hub.http.get("/")).json()
    assert {"method": "GET", "path": "/state/summary"}.items() <= index["endpoints"][0].items()


async def test_authenticated_requests_are_served_the_public_summary(hub: HubClient) -> None:
    r = await hub.summary(headers={"Authorization": "Bearer x"})
    assert r.status_code == 200 and r.headers["x-freshkeep-cache"] == "miss"
