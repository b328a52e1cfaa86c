"""The hub's ``progress`` delta equals a rebuild of the window, whatever sequence of event,
task and topic changes it is given (or it asks for a rebuild): checked against an in-memory
model of the tables, with a small window so that events leave and enter it often."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from freshkeep.core.changes import Change, Rebuild
from freshkeep.demo.progress_delta import EVENTS, TASKS, TOPICS, ProgressDelta

SIZE = 5
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Model:
    def __init__(self) -> None:
        self.topics = {1: "one", 2: "two", 3: "three"}
        self.tasks: dict[int, dict[str, Any]] = {
            i: {"id": i, "title": f"t{i}", "status": "todo"} for i in range(1, 5)
        }
        self.events: dict[int, dict[str, Any]] = {}
        self.next_id = 1

    def window(self) -> dict[str, Any]:
        """What the builder reads: the newest events of existing topics, as JSON reads back."""
        listed = sorted(
            (e for e in self.events.values() if e["topic_id"] in self.topics),
            key=lambda e: (e["created_at"], e["id"]),
            reverse=True,
        )[:SIZE]
        items = []
        for e in listed:
            task = self.tasks.get(e["task_id"]) if e["task_id"] is not None else None
            items.append(
                {
                    "id": e["id"],
                    "topic_id": e["topic_id"],
                    "topic": self.topics[e["topic_id"]],
                    "task": None
                    if e["task_id"] is None
                    else {
                        "id": e["task_id"],
                        "title": None if task is None else task["title"],
                        "status": None if task is None else task["status"],
                    },
                    "event_type": e["event_type"],
                    "summary": e["summary"],
                    "author": e["author"],
                    "created_at": e["created_at"],
                }
            )
        return orjson.loads(orjson.dumps({"recent_progress": items}))


class Delta(ProgressDelta):
    """Reads topics and tasks from the model instead of a database."""

    def __init__(self, model: Model) -> None:
        super().__init__(None, SIZE)  # type: ignore[arg-type]
        self.model = model
        self.reads = 0

    async def _read(
        self, topic_ids: set[int], task_ids: set[int]
    ) -> tuple[dict[int, str], dict[int, tuple[str, str]]]:
        self.reads += 1
        m = self.model
        topics = {i: m.topics[i] for i in topic_ids if i in m.topics}
        tasks = {i: (m.tasks[i]["title"], m.tasks[i]["status"]) for i in task_ids if i in m.tasks}
        return topics, tasks


ops = st.one_of(
    st.tuples(
        st.just("insert"), st.integers(1, 3), st.none() | st.integers(1, 5), st.integers(0, 20)
    ),
    st.tuples(
        st.just("move"), st.integers(0, 100), st.integers(0, 20), st.none() | st.integers(1, 5)
    ),
    st.tuples(st.just("delete"), st.integers(0, 100)),
    st.tuples(st.just("task"), st.integers(1, 5), st.sampled_from(["todo", "done"]), st.booleans()),
    st.tuples(st.just("task_delete"), st.integers(1, 5)),
    st.tuples(st.just("rename"), st.integers(1, 3), st.integers(0, 99)),
)


def _step(m: Model, op: tuple[Any, ...]) -> list[Change]:
    """Apply ``op`` to the model; the changes a commit of it reports."""
    kind = op[0]
    if kind == "insert":
        row = {
            "id": m.next_id,
            "topic_id": op[1],
            "task_id": op[2],
            "event_type": "note",
            "summary": f"s{m.next_id}",
            "author": "a",
            "created_at": T0 + timedelta(seconds=op[3]),
        }
        m.next_id += 1
        m.events[row["id"]] = row
        return [Change(EVENTS, "insert", None, dict(row))]
    if kind in ("move", "delete"):
        if not m.events:
            return []
        ids = sorted(m.events)
        before = m.events[ids[op[1] % len(ids)]]
        if kind == "delete":
            del m.events[before["id"]]
            return [Change(EVENTS, "delete", dict(before), None)]
        after = before | {"created_at": T0 + timedelta(seconds=op[2]), "task_id": op[3]}
        m.events[after["id"]] = after
        return [Change(EVENTS, "update", dict(before), dict(after))]
    if kind == "task":
        old = m.tasks.get(op[1])
        new = {"id": op[1], "title": f"t{op[1]}{'!' if op[3] else ''}", "status": op[2]}
        m.tasks[op[1]] = new
        return [Change(TASKS, "insert" if old is None else "update", old, dict(new))]
    if kind == "task_delete":
        old = m.tasks.pop(op[1], None)
        return [] if old is None else [Change(TASKS, "delete", old, None)]
    before_name = m.topics[op[1]]
    m.topics[op[1]] = f"topic {op[2]}"
    return [
        Change(
            TOPICS,
            "update",
            {"id": op[1], "name": before_name},
            {"id": op[1], "name": m.topics[op[1]]},
        )
    ]


TOTAL = {"applied": 0, "rebuilt": 0}


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.lists(ops, min_size=1, max_size=3), max_size=25))
async def test_the_window_delta_equals_a_rebuild(commits: list[list[tuple[Any, ...]]]) -> None:
    m = Model()
    delta = Delta(m)
    value = m.window()
    for commit in commits:
        changes = [c for op in commit for c in _step(m, op)]
        try:
            value = orjson.loads(orjson.dumps(await delta.apply(value, changes)))
            TOTAL["applied"] += 1
        except Rebuild:
            value = m.window()
            TOTAL["rebuilt"] += 1
        assert value == m.window()


def test_the_property_applied_and_rebuilt() -> None:
    """Not vacuous: most commits were applied, some (an event leaving a full window) not."""
    if not TOTAL["applied"]:
        return
    assert TOTAL["applied"] > 10 * TOTAL["rebuilt"] > 0, TOTAL
