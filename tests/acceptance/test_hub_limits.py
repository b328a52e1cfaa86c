"""The hub's edge: bounded ids, strict JSON, a body limit, and error bodies that never carry
SQL, parameters, paths or a traceback. Bad input is a 4xx with a JSON body naming what was
wrong, and nothing is written."""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from freshkeep.demo import api, hub_app
from freshkeep.demo.settings import HubSettings
from freshkeep.exceptions import ArtifactBuildError
from tests.acceptance.conftest import HubClient

SECRET = "INSERT INTO tasks (title) VALUES ('x') -- /srv/hub/secret.db"
MIB = 1024 * 1024
JSON_ROUTES = [
    ("POST", "/topics"),
    ("POST", "/workstreams"),
    ("POST", "/tasks"),
    ("PATCH", "/tasks/1"),
    ("POST", "/decisions"),
    ("POST", "/progress"),
]


def assert_no_leak(text: str) -> None:
    for word in ("INSERT", "SELECT", "secret", "Traceback", "/srv/", ".py"):
        assert word not in text, text


async def counts(hub: HubClient) -> dict[str, int]:
    totals = (await hub.http.get("/state/summary", params={"refresh": "1"})).json()["totals"]
    topics = len((await hub.http.get("/topics")).json())
    return {"topics": topics, "tasks": sum(totals["tasks_by_status"].values())} | {
        k: totals[k] for k in ("decisions",)
    }


# -- ids -----------------------------------------------------------------------------------


PATH_IDS = [
    ("GET", "/tasks/{}", "task_id"),
    ("PATCH", "/tasks/{}", "task_id"),
    ("DELETE", "/tasks/{}", "task_id"),
    ("GET", "/topics/{}", "topic_id"),
    ("GET", "/topics/{}/export", "topic_id"),
    ("GET", "/topics/{}/summary", "topic_id"),
]


@pytest.mark.parametrize("ident", ["0", "-1", str(2**31), str(2**63), str(2**64), str(10**30)])
async def test_a_path_id_out_of_range_is_422_naming_it(empty_hub: HubClient, ident: str) -> None:
    for method, path, name in PATH_IDS:
        body = {"status": "done"} if method == "PATCH" else None
        r = await empty_hub.http.request(method, path.format(ident), json=body)
        assert r.status_code == 422, (method, path, r.text)
        assert r.headers["content-type"] == "application/json"
        (error,) = r.json()["detail"]
        assert error["loc"] == ["path", name] and error["input"] == ident


BODY_IDS = [
    ("/workstreams", {"name": "W"}, "topic_id"),
    ("/workstreams", {"topic_id": 1, "name": "W"}, "owner_id"),
    ("/tasks", {"title": "T"}, "workstream_id"),
    ("/tasks", {"workstream_id": 1, "title": "T"}, "assignee_id"),
    ("/decisions", {"title": "D"}, "topic_id"),
    ("/progress", {"event_type": "note", "summary": "s", "author": "a"}, "topic_id"),
    ("/progress", {"topic_id": 1, "event_type": "note", "summary": "s", "author": "a"}, "task_id"),
]


@pytest.mark.parametrize("value", [0, -5, 2**31, 2**63, 2**64 + 1, 10**30, 1e30, 2.5, "7", True])
async def test_a_body_id_out_of_range_is_422_naming_it(hub: HubClient, value: Any) -> None:
    before = await counts(hub)
    for path, body, field in BODY_IDS:
        r = await hub.http.post(path, json=body | {field: value})
        assert r.status_code == 422, (path, field, r.text)
        assert [e["loc"] for e in r.json()["detail"]] == [["body", field]]
    r = await hub.http.patch("/tasks/1", json={"workstream_id": value})
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "workstream_id"]]
    assert await counts(hub) == before


async def test_the_largest_id_is_served_404_and_an_integral_float_is_the_integer(
    hub: HubClient,
) -> None:
    r = await hub.http.get(f"/tasks/{2**31 - 1}")
    assert r.status_code == 404 and r.json() == {"detail": f"task {2**31 - 1} does not exist"}
    r = await hub.http.post("/tasks", json={"workstream_id": 2**31 - 1, "title": "T"})
    assert r.status_code == 404
    r = await hub.http.post("/decisions", json={"topic_id": 1.0, "title": "D"})
    assert r.status_code == 201 and r.json()["topic_id"] == 1


# -- strict JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-NaN"])
async def test_nan_and_infinity_are_422(hub: HubClient, number: bytes) -> None:
    before = await counts(hub)
    content = b'{"topic_id": %s, "workstream_id": 1, "title": "T", "name": "N"}' % number
    for method, path in JSON_ROUTES:
        r = await hub.http.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422, (method, path, r.text)
        (error,) = r.json()["detail"]
        assert error["type"] == "json_invalid" and error["loc"] == ["body", 13]
        if number != b"1e999":
            assert error["ctx"]["error"] == "NaN and Infinity are not JSON numbers"
    assert await counts(hub) == before


@pytest.mark.parametrize(
    "content",
    [
        b'{"name": "\\ud800"}',  # a lone surrogate
        b'{"name": "\\udfff tail"}',
        b'{"name": "\xff\xfe"}',  # not UTF-8
        b'{"name": "ok"',  # cut short
        b"",
        b"[]",
        b'"name"',
    ],
)
async def test_malformed_json_is_422_and_nothing_is_written(
    empty_hub: HubClient, content: bytes
) -> None:
    r = await empty_hub.http.post(
        "/topics", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json" and r.json()["detail"]
    assert (await empty_hub.http.get("/topics")).json() == []


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b"\xff\xfe\x00garbage"),
        ("application/octet-stream", b'{"name": "x"}'),
        (None, b"\x80\x81"),
        ("application/json; charset=latin-1", b'{"name": "\xe9"}'),
    ],
)
async def test_a_body_that_is_not_json_is_422_and_echoed_safely(
    empty_hub: HubClient, content_type: str | None, content: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = await empty_hub.http.post("/topics", content=content, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


async def test_a_surrogate_pair_is_a_character(empty_hub: HubClient) -> None:
    r = await empty_hub.http.post(
        "/topics",
        content=b'{"name": "rocket \\ud83d\\ude80"}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201 and r.json()["name"] == "rocket \U0001f680"


async def test_text_limits_are_those_of_the_text_sent(empty_hub: HubClient) -> None:
    """A name is checked as the schema says (as sent), then stored without white space at
    either end."""
    for name in ["", " ", "\f\t", "\u3000", " " + "a" * 200, "a" * 201]:
        r = await empty_hub.http.post("/topics", json={"name": name})
        assert r.status_code == 422, (name, r.text)
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "name"]]
    assert (await empty_hub.http.get("/topics")).json() == []
    r = await empty_hub.http.post("/topics", json={"name": "\u00a0Search\n", "description": " "})
    assert r.status_code == 201 and (r.json()["name"], r.json()["description"]) == ("Search", "")
    r = await empty_hub.http.post("/topics", json={"name": "a" * 200})
    assert r.status_code == 201
    note = {"topic_id": 1, "summary": "s", "author": "a"}
    r = await empty_hub.http.post("/progress", json=note | {"event_type": " note"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "event_type"]


async def test_types_are_strict(hub: HubClient) -> None:
    for body, field in [
        ({"topic_id": 1, "title": "D", "blocking": 0}, "blocking"),
        ({"topic_id": 1, "title": "D", "blocking": "true"}, "blocking"),
        ({"topic_id": 1, "title": "D", "blocking": None}, "blocking"),
        ({"topic_id": 1, "title": 5}, "title"),
    ]:
        r = await hub.http.post("/decisions", json=body)
        assert r.status_code == 422, r.text
        assert [e["loc"] for e in r.json()["detail"]] == [["body", field]]
    before = (await hub.http.get("/tasks/1")).json()
    for body in [{}, {"status": None}, {"title": None, "status": "done"}]:
        r = await hub.http.patch("/tasks/1", json=body)
        assert r.status_code == 422, r.text
    assert (await hub.http.get("/tasks/1")).json() == before


# -- the body limit ------------------------------------------------------------------------


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[HubClient]:
    """A hub whose uploads may have 1,000 bytes."""
    limits = HubSettings(max_upload_bytes=1000, sessions_root=str(tmp_path / "sessions"))
    async with hub_app(str(tmp_path / "small.db"), seed_tasks=0, settings=limits) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            yield HubClient(app, app.state.hub, http)


async def chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


async def test_a_body_over_1_mib_is_413_at_once(empty_hub: HubClient) -> None:
    content = b'{"name": "' + b"x" * MIB + b'"}'
    for method, path in JSON_ROUTES:
        started = time.perf_counter()
        r = await empty_hub.http.request(
            method, path, content=content, headers={"Content-Type": "application/json"}
        )
        assert time.perf_counter() - started < 0.5
        assert r.status_code == 413 and r.headers["content-type"] == "application/json"
        assert r.json() == {
            "error": "too-large",
            "detail": f"the request body is larger than {MIB} bytes",
            "max_bytes": MIB,
        }
    assert (await empty_hub.http.get("/topics")).json() == []


async def test_a_chunked_body_over_the_limit_is_413_before_it_is_read_whole(
    empty_hub: HubClient,
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        async for chunk in chunks(64 * MIB):
            sent += len(chunk)
            yield chunk

    r = await empty_hub.http.post(
        "/topics", content=endless(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["max_bytes"] == MIB
    assert sent < 2 * MIB
    assert (await empty_hub.http.get("/topics")).json() == []


async def test_a_body_of_1_mib_is_read(empty_hub: HubClient) -> None:
    content = b'{"name": "x"}'.ljust(MIB)  # JSON may end in white space
    r = await empty_hub.http.post(
        "/topics", content=content, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 201, r.text


async def test_an_upload_has_its_own_limit_and_nothing_is_written(
    small: HubClient, tmp_path: Path
) -> None:
    r = await small.http.post("/sessions/alice", content=b"{}\n" * 300)  # 900 bytes
    assert r.status_code == 201, r.text
    for content in (b"{}\n" * 400, chunks(1200, 100)):
        r = await small.http.post("/sessions/bob", params={"name": "b.jsonl"}, content=content)
        assert r.status_code == 413 and r.json()["max_bytes"] == 1000
    assert not (tmp_path / "sessions" / "bob").exists()


# -- error bodies --------------------------------------------------------------------------


async def test_an_unexpected_error_is_500_with_an_error_id(
    hub: HubClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(hub.hub.keeper, "snapshot", broken)
    with caplog.at_level(logging.ERROR):
        r = await hub.http.get("/state/stats")
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "error_id"} and body["error"] == "internal"
    assert_no_leak(r.text)
    logged = [rec for rec in caplog.records if body["error_id"] in rec.getMessage()]
    assert len(logged) == 1 and SECRET in logged[0].getMessage() and logged[0].exc_info


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (IntegrityError(SECRET, {"title": "secret"}, Exception("FOREIGN KEY failed")), 409),
        (OperationalError(SECRET, {"title": "secret"}, Exception("database is locked")), 503),
    ],
)
async def test_a_database_error_is_answered_without_sql(
    hub: HubClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    status: int,
) -> None:
    async def failing(session: Any) -> None:
        raise error

    monkeypatch.setattr(api, "_commit", failing)
    with caplog.at_level(logging.WARNING, logger="freshkeep.demo"):
        r = await hub.http.post("/tasks", json={"workstream_id": 1, "title": "T"})
    assert r.status_code == status, r.text
    assert r.json()["error_id"] and r.json()["detail"]
    assert_no_leak(r.text)
    assert any(r.json()["error_id"] in rec.getMessage() for rec in caplog.records)


async def test_an_export_that_cannot_be_built_is_503_without_the_error(
    hub: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(session: Any, topic_id: int) -> Any:
        raise ArtifactBuildError(SECRET)

    monkeypatch.setattr(hub.hub.exports, "get", failing)
    r = await hub.http.get("/topics/1/export", headers={"Accept": "application/json"})
    assert r.status_code == 503 and r.json()["error"] == "export-unavailable"
    assert r.json()["error_id"] and "topic 1" in r.json()["detail"]
    assert_no_leak(r.text)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/topics", {"GET", "POST"}),
        ("DELETE", "/topics", {"GET", "POST"}),
        ("POST", "/tasks/1", {"GET", "PATCH", "DELETE"}),
        ("OPTIONS", "/tasks/1", {"GET", "PATCH", "DELETE"}),
        ("PUT", "/state/summary", {"GET"}),
        ("PUT", "/sessions/usage", {"GET"}),  # the usage resource, not a user's uploads
        ("PUT", "/sessions/alice", {"POST"}),
    ],
)
async def test_405_names_every_method_of_the_path(
    empty_hub: HubClient, method: str, path: str, allowed: set[str]
) -> None:
    r = await empty_hub.http.request(method, path)
    assert r.status_code == 405 and r.headers["content-type"] == "application/json"
    assert {m.strip() for m in r.headers["allow"].split(",")} - {"HEAD"} == allowed


async def test_a_task_of_another_topic_is_409(hub: HubClient) -> None:
    task = (await hub.http.get("/tasks/1")).json()
    other = 2 if task["topic_id"] == 1 else 1
    note = {"event_type": "note", "summary": "s", "author": "a"}
    r = await hub.http.post("/progress", json={"topic_id": other, "task_id": 1} | note)
    assert r.status_code == 409
    assert r.json() == {"detail": f"task 1 belongs to topic {task['topic_id']}, not {other}"}


async def test_concurrent_bad_requests_leave_the_hub_serving(hub: HubClient) -> None:
    bad = [
        hub.http.post("/topics", content=b"NaN", headers={"Content-Type": "application/json"}),
        hub.http.get(f"/tasks/{2**63}"),
        hub.http.post("/topics", content=b"x" * (2 * MIB)),
    ] * 5
    statuses = {r.status_code for r in await asyncio.gather(*bad)}
    assert statuses == {413, 422}
    assert (await hub.http.get("/tasks/1")).status_code == 200


async def test_the_schema_declares_the_bounds_and_the_errors(empty_hub: HubClient) -> None:
    spec = (await empty_hub.http.get("/openapi.json")).json()
    paths = spec["paths"]
    (param,) = paths["/tasks/{task_id}"]["get"]["parameters"]
    assert param["schema"]["minimum"] == 1 and param["schema"]["maximum"] == 2**31 - 1
    assert isinstance(param["schema"]["maximum"], int)
    for method, path in JSON_ROUTES:
        operation = paths[path.replace("/1", "/{task_id}")][method.lower()]
        assert {"400", "413", "422"} <= set(operation["responses"]), (method, path)
    blocking = spec["components"]["schemas"]["DecisionIn"]["properties"]["blocking"]
    assert blocking["type"] == "boolean"


def reference_exchanges() -> list[tuple[list[str], str]]:
    """The ``$ curl`` lines of the reference's example of the hub's error bodies, each with the
    body it shows."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    (block,) = [
        b
        for b in re.findall(r"^```text\n(.*?)^```$", text, re.S | re.M)
        if "$ curl -s localhost:8000/tasks/" in b
    ]
    lines = block.strip().splitlines()
    return [(shlex.split(lines[i][2:]), lines[i + 1]) for i in range(0, len(lines), 2)]


async def test_the_reference_examples_are_what_the_hub_answers(empty_hub: HubClient) -> None:
    exchanges = reference_exchanges()
    assert len(exchanges) == 2
    for argv, shown in exchanges:
        assert argv[:2] == ["curl", "-s"]
        url = argv[2].removeprefix("localhost:8000")
        options = dict(zip(argv[3::2], argv[4::2], strict=True))
        name, _, value = options.get("-H", "").partition(": ")
        if "-d" in options:
            r = await empty_hub.http.post(url, content=options["-d"], headers={name: value})
        else:
            r = await empty_hub.http.get(url)
        assert r.status_code == 422 and r.text == shown, (argv, r.text)
