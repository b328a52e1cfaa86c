"""The examples of docs/remote-and-notify.md, run as they are written. The tracker they ask is
faked: ``httpx.AsyncClient`` gets a ``MockTransport`` while a block runs."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import httpx
import pytest

from freshkeep import Keeper
from tests.docs_blocks import python_block, run_block

STATES = [
    {"id": "s1", "name": "Todo", "group": "unstarted"},
    {"id": "s2", "name": "In review", "group": "started"},
]


class Tracker:
    """``https://tracker.example.com``: the states of project ``proj-1``, 404 for others."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host == "tracker.example.com"
        self.requests.append(request.url.path)
        if request.url.path != "/api/projects/proj-1/states":
            return httpx.Response(404)
        return httpx.Response(200, json=STATES)


@pytest.fixture
def tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tracker]:
    fake = Tracker()
    client = functools.partial(httpx.AsyncClient, transport=httpx.MockTransport(fake.handle))
    monkeypatch.setattr(httpx, "AsyncClient", client)
    yield fake


async def test_a_remote_value_is_fetched_once_within_its_ttl(tracker: Tracker) -> None:
    found = await run_block(python_block("remote-and-notify.md", "remote-values"), {})
    try:
        assert found["todo"] == STATES
        assert tracker.requests == ["/api/projects/proj-1/states"]  # the second read: memory
        read = await found["states"].read("proj-1")
        assert (read.status, read.value) == ("hit", STATES)
        assert await found["states"].get("nope") == []  # 404 raises: the fallback
    finally:
        await found["client"].aclose()


async def test_derived_lookups_come_from_one_record(tracker: Tracker) -> None:
    first = await run_block(python_block("remote-and-notify.md", "remote-values"), {})
    try:
        names = {"keeper": Keeper(), "fetch_states": first["fetch_states"]}
        found = await run_block(python_block("remote-and-notify.md", "derived-lookups"), names)
    finally:
        await first["client"].aclose()
    assert (found["state_id"], found["group"]) == ("s2", "started")
    assert found["groups"] == {"s1": "unstarted", "s2": "started"}
    assert len(tracker.requests) == 2  # one per keeper: the lookups share their record


async def test_a_notifier_sends_a_change_once() -> None:
    class Chat:
        def __init__(self) -> None:
            self.posts: list[str] = []

        async def post(self, text: str) -> None:
            self.posts.append(text)

    chat, keeper = Chat(), Keeper()
    found = await run_block(
        python_block("remote-and-notify.md", "notifier"), {"keeper": keeper, "chat": chat}
    )
    assert found["outcome"] == "sent"
    assert chat.posts == ["TASK-12: None -> {'status': 'unblocked'} (new)"]
    notifier = found["notifier"]
    assert await notifier.observe("TASK-12", {"status": "unblocked"}) == "deduped"
    assert await notifier.observe("TASK-12", {"status": "done"}) == "skipped"  # terminal
    assert await notifier.observe("TASK-12", {"status": "blocked"}) == "sent"
    assert chat.posts[-1] == "TASK-12: {'status': 'unblocked'} -> {'status': 'blocked'} (change)"
    assert keeper.notifiers["task-status"] is notifier


async def test_the_testing_example_passes() -> None:
    found = await run_block(python_block("remote-and-notify.md", "testing"), {})
    await found["test_states_refresh_after_the_ttl"]()
