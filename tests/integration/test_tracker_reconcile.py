"""The docs' example: reconciling an external tracker every tick, without spam, across a restart.

The tracker is faked with ``httpx.MockTransport``; the confirmed states live in SQLite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep import ChangeNotifier, Keeper, Notice
from freshkeep.notify.sql import SQLAlchemyStateStore
from freshkeep.testing import FakeClock


class FakeTracker:
    def __init__(self) -> None:
        self.states = [
            {"id": "s1", "group": "backlog"},
            {"id": "s2", "group": "started"},
            {"id": "s3", "group": "completed"},
        ]
        self.tasks: dict[str, dict[str, Any]] = {
            "T-1": {"state_id": "s1", "blocked_by": ["T-0"], "assignee": "ana", "title": "a"},
            "T-2": {"state_id": "s3", "blocked_by": [], "assignee": "bo", "title": "b"},
            "T-3": {"state_id": "s2", "blocked_by": [], "assignee": "cy", "title": "c"},
        }
        self.state_requests = 0
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        parts = request.url.path.strip("/").split("/")  # api/projects/<id>/<what>
        if parts[2] != "proj-1":
            return httpx.Response(404)
        if parts[3] == "states":
            self.state_requests += 1
            return httpx.Response(200, json=self.states)
        return httpx.Response(200, json=[{"id": i, **t} for i, t in self.tasks.items()])


class Service:
    """The example of docs/remote-and-notify.md, on an injected clock, transport and store."""

    def __init__(self, tracker: FakeTracker, clock: FakeClock, store: SQLAlchemyStateStore):
        self.keeper = Keeper(clock=clock)
        self.http = httpx.AsyncClient(
            transport=httpx.MockTransport(tracker.handle), base_url="https://tracker.test"
        )
        self.messages: list[tuple[str, str]] = []
        self.chat_down = False
        self.tasks: dict[str, dict[str, Any]] = {}
        self.workflow = self.keeper.remote(
            "tracker-states",
            self.fetch_states,
            ttl=600,
            fallback=[],
            derive=lambda states: {"group": {s["id"]: s["group"] for s in states}},
        )
        self.unblocked: ChangeNotifier = self.keeper.notifier(
            "task-unblocked",
            self.tell_assignee,
            store=store,
            terminal=lambda state: state["done"],
            notify_initial=False,
            confirm=2,
        )

    async def fetch_states(self, project_id: str) -> Any:
        response = await self.http.get(f"/api/projects/{project_id}/states")
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json()

    async def tell_assignee(self, notice: Notice) -> None:
        if notice.state["blocked"]:
            return
        if self.chat_down:
            raise ConnectionError("chat is down")
        task = self.tasks[notice.subject]
        self.messages.append((task["assignee"], f"{notice.subject} is unblocked"))

    async def reconcile(self, project_id: str) -> None:
        groups = await self.workflow.lookup("group", project_id)
        response = await self.http.get(f"/api/projects/{project_id}/tasks")
        if response.status_code == 404:
            return
        response.raise_for_status()
        for task in response.json():
            self.tasks[task["id"]] = task
            group = groups.get(task["state_id"], "unknown")
            state = {
                "blocked": bool(task["blocked_by"]),
                "done": group in ("completed", "cancelled"),
            }
            await self.unblocked.observe(task["id"], state)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.keeper.aclose()


async def test_reconciling_a_tracker_sends_once_per_real_change(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    store = SQLAlchemyStateStore(engine)
    await store.create_table()
    tracker, clock = FakeTracker(), FakeClock()
    service = Service(tracker, clock, store)

    async def ticks(n: int) -> None:
        for _ in range(n):
            await service.reconcile("proj-1")
            clock.advance(120)

    try:
        await ticks(100)  # first sight of every task: a baseline, no messages
        assert service.messages == []
        tracker.tasks["T-1"]["blocked_by"] = []  # T-1 is unblocked
        tracker.tasks["T-3"]["title"] = "renamed"  # not a change of what we notify about
        await ticks(1000)
        assert service.messages == [("ana", "T-1 is unblocked")]
        stats = service.keeper.snapshot().notifiers["task-unblocked"]
        assert stats.skipped == 1100  # T-2 is done: skipped on every tick
        # ~73 hours of ticks with a 600 s TTL: the states were fetched again about every 10 min
        assert 200 < tracker.state_requests < 240

        # The chat service fails while T-3 gets blocked and unblocked again.
        tracker.tasks["T-3"]["blocked_by"] = ["T-9"]
        await ticks(3)
        tracker.tasks["T-3"]["blocked_by"] = []
        service.chat_down = True
        await ticks(5)
        assert len(service.messages) == 1 and service.unblocked.stats.failed >= 1
        service.chat_down = False
        await ticks(5)
        assert service.messages[-1] == ("cy", "T-3 is unblocked") and len(service.messages) == 2

        # A tracker outage: the last states are served, nothing is sent, nothing raises.
        tracker.down = True
        for _ in range(10):
            await service.workflow.lookup("group", "proj-1")
            clock.advance(120)
        assert service.workflow.snapshot().failing == 1
        tracker.down = False
    finally:
        await service.aclose()

    # A deploy: a new process with the same database sends nothing again.
    restarted = Service(tracker, clock, SQLAlchemyStateStore(engine))
    try:
        await restarted.unblocked.preload()
        for _ in range(100):
            await restarted.reconcile("proj-1")
            clock.advance(120)
        assert restarted.messages == []
        assert restarted.unblocked.stats.deduped == 200
    finally:
        await restarted.aclose()
        await engine.dispose()
