"""The hub's session uploads, processors and admin endpoint, over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from freshkeep.demo import hub_app
from freshkeep.demo.app import create_app, get_hub
from freshkeep.demo.sessions import Sessions
from freshkeep.demo.settings import HubSettings
from freshkeep.exceptions import ConfigurationError

TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def jsonl(*entries: Any) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in entries) + b"\n"


SESSION = jsonl(
    {"type": "user", "message": {"content": "run the tests"}},
    {"type": "tool_use", "name": "bash", "usage": {"input_tokens": 10, "output_tokens": 5}},
    {"type": "tool_result", "content": "===== 12 passed in 0.4s ====="},
    {
        "type": "assistant",
        "message": {
            "usage": {"input_tokens": 7, "output_tokens": 3},
            "content": [{"type": "tool_use", "name": "read"}, {"type": "text", "text": "ok"}],
        },
    },
)


class Client:
    def __init__(self, http: httpx.AsyncClient, sessions: Sessions, root: Path) -> None:
        self.http, self.sessions, self.root = http, sessions, root

    async def upload(self, user: str, body: bytes, **params: str) -> httpx.Response:
        return await self.http.post(f"/sessions/{user}", content=body, params=params)

    async def run(self, name: str, **kw: Any) -> httpx.Response:
        return await self.http.post(f"/admin/processors/{name}/run", **kw)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Client]:
    root = tmp_path / "sessions"
    settings = HubSettings(
        sessions_root=str(root), admin_token=SecretStr(TOKEN), processing_interval=0
    )
    async with hub_app(str(tmp_path / "hub.db"), seed_tasks=0, settings=settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            yield Client(http, app.state.sessions, root)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def test_upload_validates_line_by_line_and_stores_the_file(client: Client) -> None:
    r = await client.upload("alice", SESSION, name="s1.jsonl")
    assert r.status_code == 201, r.text
    assert r.json() == {
        "user": "alice",
        "name": "s1.jsonl",
        "entries": 4,
        "malformed": 0,
        "errors": [],
    }
    assert (client.root / "alice" / "s1.jsonl").read_bytes() == SESSION

    bad = b'{"type": "user"}\n{not json\n\n[1, 2]\n{"ok": true}\n'
    r = await client.upload("bob", bad)
    assert r.status_code == 201
    body = r.json()
    assert body["entries"] == 4 and body["malformed"] == 2
    assert [e["line"] for e in body["errors"]] == [2, 4]
    assert body["name"].startswith("session-") and body["name"].endswith(".jsonl")
    assert (client.root / "bob" / body["name"]).read_bytes() == bad  # still stored


@pytest.mark.parametrize(
    ("user", "name", "status"),
    [
        ("%2E%2E", "x.jsonl", 400),  # ".." once decoded
        ("%2E%2E%2F%2E%2E", None, 404),  # "../.." has a "/": no route matches
        ("..", None, 405),  # the client resolves the dot segment: POST /
        ("al%5Cice", None, 400),  # a backslash
        ("alice", "../../escape.jsonl", 400),
        ("alice", "..%2Fescape.jsonl", 400),
        ("alice", "sub/x.jsonl", 400),
        ("alice", ".hidden.jsonl", 400),
        ("alice", "notes.txt", 400),
        ("alice", "a..jsonl", 400),
    ],
)
async def test_path_traversal_is_refused_and_writes_nothing(
    client: Client, user: str, name: str | None, status: int
) -> None:
    params = {} if name is None else {"name": name}
    url = httpx.URL(f"http://hub/sessions/{user}", params=params)
    r = await client.http.post(url, content=SESSION)
    assert r.status_code == status, r.text
    assert files_under(client.root) == []


async def test_processors_run_from_the_admin_endpoint(client: Client) -> None:
    assert (await client.upload("alice", SESSION, name="s1.jsonl")).status_code == 201
    assert (await client.upload("alice", SESSION, name="s2.jsonl")).status_code == 201
    assert (await client.upload("bob", SESSION[:60] + b"\n", name="b.jsonl")).status_code == 201

    r = await client.run("usage", headers=AUTH)
    assert r.status_code == 200, r.text
    assert (r.json()["scanned"], r.json()["processed"]) == (3, 3)
    usage = (await client.http.get("/sessions/usage")).json()
    assert usage["alice"] == {
        "input_tokens": 34,
        "output_tokens": 16,
        "tool_calls": 4,
        "entries": 8,
    }
    assert usage["bob"]["entries"] == 2  # one whole line, one cut short (malformed)

    r = await client.run("evidence", headers=AUTH)
    assert r.json()["processed"] == 3
    assert client.sessions.evidence.found["alice/s1.jsonl"] == [{"entry": 3, "match": "12 passed"}]
    again = (await client.run("evidence", headers=AUTH)).json()
    # Written within the racy window (2 s): hashed again to be sure, but not reprocessed.
    assert (again["skipped"] + again["unchanged"], again["processed"]) == (3, 0)

    listing = (await client.http.get("/admin/processors", headers=AUTH)).json()
    assert set(listing) == {"evidence", "usage"}
    assert listing["evidence"]["last_run"]["scanned"] == 3


async def test_admin_endpoint_auth_404_and_409(client: Client) -> None:
    assert (await client.run("usage")).status_code == 401
    wrong = await client.run("usage", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    r = await client.run("nope", headers=AUTH)
    assert r.status_code == 404 and "no processor named 'nope'" in r.json()["detail"]

    await client.upload("alice", SESSION, name="s1.jsonl")
    proc = client.sessions.usage_processor
    entered, release = asyncio.Event(), asyncio.Event()
    original = proc.process

    async def slow(item: Any, ctx: Any) -> Any:
        entered.set()
        await release.wait()
        return await original(item, ctx)

    proc.process = slow  # type: ignore[method-assign]
    first = asyncio.create_task(client.run("usage", headers=AUTH))
    await entered.wait()
    busy = await client.run("usage", headers=AUTH)
    assert busy.status_code == 409
    assert busy.json() == {"detail": "processor 'usage' is already running", "processor": "usage"}
    release.set()
    assert (await first).status_code == 200


async def test_admin_endpoints_are_disabled_without_a_token(tmp_path: Path) -> None:
    settings = HubSettings(sessions_root=str(tmp_path / "s"), processing_interval=0)
    async with hub_app(str(tmp_path / "h.db"), seed_tasks=0, settings=settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            r = await http.post("/admin/processors/usage/run", headers=AUTH)
            assert r.status_code == 403 and "FRESHKEEP_ADMIN_TOKEN" in r.json()["detail"]


async def test_the_scheduler_runs_the_processors(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    (root / "carol").mkdir(parents=True)
    (root / "carol" / "a.jsonl").write_bytes(SESSION)
    settings = HubSettings(sessions_root=str(root), processing_interval=0.01)
    async with hub_app(str(tmp_path / "h.db"), seed_tasks=0, settings=settings) as app:
        sessions: Sessions = app.state.sessions
        assert set(sessions.scheduler.jobs) == {"evidence", "usage"}
        for _ in range(1000):  # bounded: each wait is on the scheduler's own runs
            if len(sessions.pipeline.last_stats) == 2:
                break
            await asyncio.sleep(0.01)
        assert sessions.pipeline.last_stats["usage"].scanned == 1


async def test_each_processor_has_its_own_interval(tmp_path: Path) -> None:
    settings = HubSettings(
        sessions_root=str(tmp_path / "s"),
        admin_token=SecretStr(TOKEN),
        processing_interval=3600,
        processor_intervals={"usage": 600},
    )
    async with hub_app(str(tmp_path / "h.db"), seed_tasks=0, settings=settings) as app:
        sessions: Sessions = app.state.sessions
        assert {n: j.every for n, j in sessions.scheduler.jobs.items()} == {
            "evidence": 3600.0,
            "usage": 600.0,
        }
        watches = get_hub(app).keeper.health.watches
        assert {n: (w.cadence, w.effective_grace()) for n, w in watches.items()} == {
            "evidence": (3600.0, 7200.0),
            "usage": (600.0, 1200.0),
        }
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            listing = (await http.get("/admin/processors", headers=AUTH)).json()
        assert listing["usage"]["schedule"]["every"] == 600.0
        assert listing["evidence"]["schedule"]["every"] == 3600.0

    off = settings.model_copy(update={"processor_intervals": {"evidence": 0}})
    async with hub_app(str(tmp_path / "h.db"), seed_tasks=0, settings=off) as app:
        assert set(app.state.sessions.scheduler.jobs) == {"usage"}
        assert set(get_hub(app).keeper.health.watches) == {"usage"}

    typo = settings.model_copy(update={"processor_intervals": {"usage": 5, "evidnce": 5}})
    with pytest.raises(ConfigurationError, match="'evidnce'"):
        create_app(str(tmp_path / "h.db"), seed_tasks=0, settings=typo)
