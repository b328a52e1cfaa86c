"""A remote value fetched over real HTTP from a local server: TTL, new values, stale on 500."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from freshkeep import Keeper
from freshkeep.testing import FakeClock


class Tracker:
    """What the fake issue tracker serves: the workflow states per project, or a failure."""

    def __init__(self) -> None:
        self.states: dict[str, list[dict[str, str]]] = {}
        self.status = 200
        self.requests = 0
        self.lock = threading.Lock()


def make_handler(tracker: Tracker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with tracker.lock:
                tracker.requests += 1
                status = tracker.status
                project = self.path.rsplit("/", 2)[-2]
                body: Any = tracker.states.get(project)
            if status != 200:
                payload, code = b'{"error": "internal"}', status
            elif body is None:
                payload, code = b'{"error": "no such project"}', 404
            else:
                payload, code = json.dumps(body).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def tracker() -> Iterator[tuple[Tracker, str]]:
    state = Tracker()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def derive(states: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {
        "by_name": {s["name"]: s["id"] for s in states},
        "group": {s["id"]: s["group"] for s in states},
    }


async def test_states_over_http_refresh_after_ttl_and_survive_an_outage(
    tracker: tuple[Tracker, str],
) -> None:
    server, base_url = tracker
    server.states["p1"] = [{"id": "s1", "name": "Todo", "group": "backlog"}]
    clock = FakeClock()
    keeper = Keeper(clock=clock)
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:

        async def fetch(project: str) -> list[dict[str, str]]:
            response = await client.get(f"/projects/{project}/states")
            if response.status_code == 404:
                return []  # an unknown project has no states
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

        states = keeper.remote("tracker-states", fetch, ttl=300, derive=derive, fallback=[])
        clock.advance(1000)
        read = await states.read("p1")
        assert read.status == "miss" and read.lookup("by_name") == {"Todo": "s1"}
        assert server.requests == 1

        # A new workflow state upstream: unseen within the TTL, seen after it.
        server.states["p1"].append({"id": "s2", "name": "Review", "group": "started"})
        clock.advance(100)
        assert (await states.read("p1")).lookup("by_name") == {"Todo": "s1"}
        assert server.requests == 1
        clock.advance(200)
        read = await states.read("p1")
        assert read.status == "miss" and read.lookup("group") == {"s1": "backlog", "s2": "started"}
        assert server.requests == 2

        # The tracker fails: the last value is served, the failure counted and shown.
        server.status = 500
        clock.advance(301)
        read = await states.read("p1")
        assert read.status == "error-stale" and read.lookup("by_name")["Review"] == "s2"
        assert isinstance(read.error, httpx.HTTPStatusError)
        for _ in range(50):
            assert (await states.read("p1")).status == "error-stale"
        assert server.requests == 3  # backing off, not hammering the tracker
        stats = keeper.snapshot().remotes["tracker-states"]
        assert stats.fetch_errors == 1 and "500" in (stats.last_error or "")
        assert stats.values["p1"].age == 301 and stats.values["p1"].failures == 1

        # Back up: the next fetch after the backoff heals it.
        server.status = 200
        clock.advance(2)
        assert (await states.read("p1")).status == "miss"
        assert await states.lookup("group", "unknown-project") == {}
    await keeper.aclose()


def test_sync_fetch_over_http(tracker: tuple[Tracker, str]) -> None:
    server, base_url = tracker
    server.states["p1"] = [{"id": "s1", "name": "Todo", "group": "backlog"}]
    clock = FakeClock()
    keeper = Keeper(clock=clock)
    with httpx.Client(base_url=base_url, timeout=5) as client:

        def fetch(project: str) -> Any:
            response = client.get(f"/projects/{project}/states")
            response.raise_for_status()
            return response.json()

        states = keeper.remote("states", fetch, ttl=60, derive=derive)
        assert states.read_sync("p1").lookup("group") == {"s1": "backlog"}
        server.status = 500
        clock.advance(61)
        assert states.read_sync("p1").status == "error-stale"
        assert server.requests == 2
