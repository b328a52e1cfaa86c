"""The delta of the summary's ``progress`` section: a commit's changed rows applied to the
window of the newest progress events, instead of reading it again.

The window lists the :data:`RECENT_PROGRESS` newest events (by ``created_at``, then ``id``,
newest first) whose topic exists, each with its topic's name and its task's current title and
status. While it lists fewer, it lists every such event: then an event deleted, or moved out of
it, leaves nothing to fetch. What :class:`ProgressDelta` does, change by change:

- an event inserted, or updated: put where its key sorts (cut to the window's length), or
  left out when it sorts after a full window's last; its topic's name and task's state are
  taken from the window or the commit, else read by id;
- an event deleted, or updated to sort after a full window's last, while listed in a full
  window: the event that would take its place is not known: :class:`Rebuild`;
- a task inserted, updated or deleted: the title and status shown for its listed events
  (``null`` once it is deleted: the events stay);
- a topic renamed: the name shown for its listed events; a topic inserted or deleted while
  it could own events: :class:`Rebuild`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from freshkeep.core.changes import Change, Rebuild
from freshkeep.demo.models import Task, Topic
from freshkeep.sql.revisions import table_source

EVENTS, TASKS, TOPICS = (table_source(t) for t in ("progress_events", "tasks", "topics"))

Key = tuple[int, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def _when(value: Any) -> datetime:
    """A ``created_at`` as the key compares it: aware UTC."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(at, datetime):
        raise Rebuild(f"an event's created_at is {value!r}")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _order(row: Mapping[str, Any]) -> Key:
    """A key that sorts ascending as the window lists events: newest first."""
    return -((_when(row["created_at"]) - _EPOCH) // _MICRO), -int(row["id"])


class ProgressDelta:
    """Applies changes to the ``progress`` value (``Section(apply=...)``); reads a topic's
    name or a task's state by id when neither the window nor the commit shows it."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], size: int) -> None:
        self.sessionmaker = sessionmaker
        self.size = size

    async def apply(self, value: dict[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
        """The ``progress`` value with ``changes`` applied, or :class:`Rebuild`."""
        window = _Window(value["recent_progress"], self.size)
        wanted_topics, wanted_tasks = self._missing(window, changes)
        topics: dict[int, str] = {}
        tasks: dict[int, tuple[str, str]] = {}
        if wanted_topics or wanted_tasks:
            topics, tasks = await self._read(wanted_topics, wanted_tasks)
        for change in changes:
            if change.table == EVENTS:
                window.event(change, topics, tasks)
            elif change.table == TASKS:
                window.task(change, tasks)
            elif change.table == TOPICS:
                window.topic(change, topics)
            else:
                raise Rebuild(f"no delta for {change.table}")
        value["recent_progress"] = window.items
        return value

    @staticmethod
    def _missing(window: _Window, changes: Iterable[Change]) -> tuple[set[int], set[int]]:
        """The topics and tasks of inserted or updated events the window does not show (read
        as they are now: a later change of the commit to one of them is applied after)."""
        topics: set[int] = set()
        tasks: set[int] = set()
        known_topics = {i["topic_id"] for i in window.items}
        known_tasks = {i["task"]["id"] for i in window.items if i["task"] is not None}
        for c in changes:
            if c.table == EVENTS and c.after is not None:
                topics.add(c.after["topic_id"])
                if c.after["task_id"] is not None:
                    tasks.add(c.after["task_id"])
        return topics - known_topics, tasks - known_tasks

    async def _read(
        self, topic_ids: set[int], task_ids: set[int]
    ) -> tuple[dict[int, str], dict[int, tuple[str, str]]]:
        async with self.sessionmaker() as session:
            topics: dict[int, str] = {}
            tasks: dict[int, tuple[str, str]] = {}
            if topic_ids:
                rows = await session.execute(
                    select(Topic.id, Topic.name).where(Topic.id.in_(sorted(topic_ids)))
                )
                topics = {i: n for i, n in rows}
            if task_ids:
                found = await session.execute(
                    select(Task.id, Task.title, Task.status).where(Task.id.in_(sorted(task_ids)))
                )
                tasks = {i: (t, s) for i, t, s in found}
        return topics, tasks


class _Window:
    """The listed events, newest first, and what is known of their topics and tasks."""

    def __init__(self, items: list[dict[str, Any]], size: int) -> None:
        self.items = items
        self.size = size
        self.complete = len(items) < size
        """Whether every event (whose topic exists) is listed."""
        self.keys = [_order(i) for i in items]  # ascending: newest first
        self.names: dict[int, str] = {i["topic_id"]: i["topic"] for i in items}
        """The topics' names as the changes applied so far left them."""
        self.states: dict[int, tuple[Any, Any]] = {
            i["task"]["id"]: (i["task"]["title"], i["task"]["status"])
            for i in items
            if i["task"] is not None
        }
        """The tasks' titles and statuses as the changes applied so far left them."""

    def _find(self, event_id: int) -> int | None:
        for at, item in enumerate(self.items):
            if item["id"] == event_id:
                return at
        return None

    def _remove(self, at: int) -> None:
        del self.items[at]
        del self.keys[at]

    def _topic_name(self, tid: int, read: Mapping[int, str]) -> str:
        name = self.names.get(tid)
        if name is None:
            name = read.get(tid)
        if name is None:  # no such topic: the event is not listed, and others may be
            raise Rebuild(f"topic {tid} of an event is not known")
        return name

    def _task_state(self, task_id: int | None, read: Mapping[int, tuple[str, str]]) -> Any:
        if task_id is None:
            return None
        title, status = self.states.get(task_id) or read.get(task_id) or (None, None)
        return {"id": task_id, "title": title, "status": status}

    def event(
        self,
        c: Change,
        topics: Mapping[int, str],
        tasks: Mapping[int, tuple[str, str]],
    ) -> None:
        if c.before is not None:
            at = self._find(c.before["id"])
            if at is None and self.complete:
                raise Rebuild("an event the window should list is not in it")
            if at is not None and not self.complete:
                # Listed in a full window: it may stay only where it still sorts before the
                # last listed (else the event after the window would take its place).
                last = self.keys[-1]
                self._remove(at)
                if c.after is None or _order(c.after) > last:
                    raise Rebuild("an event left a full window")
                self._insert(c.after, topics, tasks, full=False)
                return
            if at is not None:
                self._remove(at)
        if c.after is not None:
            self._insert(c.after, topics, tasks, full=not self.complete)

    def _insert(
        self,
        row: Mapping[str, Any],
        topics: Mapping[int, str],
        tasks: Mapping[int, tuple[str, str]],
        *,
        full: bool,
    ) -> None:
        """Insert the event ``row`` where it sorts (not past a full window's end)."""
        key = _order(row)
        at = bisect.bisect_left(self.keys, key)
        if full and at >= len(self.items):
            return  # older than every listed event of a full window
        item = {
            "id": row["id"],
            "topic_id": row["topic_id"],
            "topic": self._topic_name(row["topic_id"], topics),
            "task": self._task_state(row["task_id"], tasks),
            "event_type": row["event_type"],
            "summary": row["summary"],
            "author": row["author"],
            "created_at": _when(row["created_at"]),
        }
        self.items.insert(at, item)
        self.keys.insert(at, key)
        if len(self.items) > self.size:
            self._remove(self.size)
        self.complete = len(self.items) < self.size

    def task(self, c: Change, read: Mapping[int, tuple[str, str]]) -> None:
        tid, row = c.row["id"], c.after
        if row is None:  # deleted: its events stay, without it
            state: tuple[Any, Any] = (None, None)
        elif c.op == "insert":
            state = (row["title"], row["status"])
        elif tid not in self.states:
            return  # no listed event shows it (an event of it inserted later is read)
        else:  # the columns the commit changed (the others as the window shows them)
            title, status = self.states[tid]
            state = (
                row["title"] if c.changed("title") else title,
                row["status"] if c.changed("status") else status,
            )
        self.states[tid] = state
        for item in self.items:
            task = item["task"]
            if task is not None and task["id"] == tid:
                task["title"], task["status"] = state

    def topic(self, c: Change, read: Mapping[int, str]) -> None:
        if c.op != "update":  # events of a new topic appear, those of a deleted one go
            listed = any(i["topic_id"] == c.row["id"] for i in self.items)
            if c.op == "delete" and not listed:
                return
            raise Rebuild(f"a topic was {c.op}d")
        if not c.changed("name"):
            return
        assert c.after is not None
        self.names[c.row["id"]] = c.after["name"]
        for item in self.items:
            if item["topic_id"] == c.row["id"]:
                item["topic"] = c.after["name"]
