"""The hub's ``core`` and ``progress`` sections apply a commit's changed rows (a delta) instead
of rebuilding, and what they serve equals a rebuild: after every step of random sequences of
creates, updates, deletes and moves, through the hub's API and the same ORM code, on a real SQLite
database with the hub's triggers installed.

``generated_at`` is the one field compared by nothing: it is the time of the last rebuild or
delta, not derived from the rows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from freshkeep.demo.models import (
    Comment,
    Decision,
    Export,
    Label,
    Member,
    Milestone,
    ProgressEvent,
    SessionFile,
    Task,
    TaskLabel,
    Topic,
    Workstream,
    utcnow,
)
from freshkeep.demo.summary import RECENT_PROGRESS, SummaryBuilders
from freshkeep.demo.summary_delta import Encoded
from freshkeep.integrations.sqlalchemy import SQLITE_BEGIN
from tests.acceptance.conftest import HubClient, running_hub

SEED = 40
NAMES = itertools.count()

api_steps = st.one_of(
    st.tuples(st.just("topic"), st.integers(0, 10**6)),
    st.tuples(st.just("workstream"), st.integers(0, 50)),
    st.tuples(
        st.just("task"),
        st.integers(0, 500),
        st.sampled_from(["todo", "progress", "blocked", "done"]),
        st.one_of(st.none(), st.integers(0, 50)),
    ),
    st.tuples(
        st.just("patch"),
        st.integers(0, 500),
        st.one_of(st.none(), st.sampled_from(["todo", "progress", "blocked", "done"])),
        st.one_of(st.none(), st.integers(0, 500)),
    ),
    st.tuples(st.just("delete"), st.integers(0, 500)),
    st.tuples(st.just("decision"), st.integers(0, 50), st.booleans(), st.booleans()),
    st.tuples(st.just("progress"), st.integers(0, 500), st.booleans()),
)
orm_steps = st.one_of(
    st.tuples(st.just("decide"), st.integers(0, 500)),
    st.tuples(st.just("comment"), st.integers(0, 500), st.booleans()),
    st.tuples(st.just("label"), st.integers(0, 500), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("new_label"), st.integers(0, 10**6)),
    st.tuples(st.just("assign"), st.integers(0, 500), st.one_of(st.none(), st.integers(0, 50))),
    st.tuples(st.just("member"), st.integers(0, 50), st.integers(0, 10**6)),
    st.tuples(st.just("milestone"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("file"), st.integers(0, 50), st.booleans(), st.integers(0, 10**6)),
    st.tuples(st.just("export"), st.integers(0, 50), st.sampled_from(["ready", "failed"])),
    st.tuples(st.just("bulk"), st.integers(0, 500)),
    # progress events: edited (moved in time, to another task), deleted; topics renamed
    st.tuples(st.just("event"), st.integers(0, 10**6), st.integers(-3, 3), st.booleans()),
    st.tuples(st.just("event_delete"), st.integers(0, 10**6)),
    st.tuples(st.just("rename"), st.integers(0, 50), st.integers(0, 10**6)),
    st.tuples(
        st.just("event_task"), st.integers(0, 50), st.sampled_from(["todo", "blocked", "done"])
    ),
)
steps = st.lists(st.one_of(api_steps, orm_steps), min_size=1, max_size=14)


def _pick(ids: list[int], n: int) -> int:
    return ids[n % len(ids)]


async def _ids(hub: HubClient, model: Any) -> list[int]:
    async with hub.hub.sessionmaker() as session:
        return list(await session.scalars(select(model.id).order_by(model.id)))


async def _api(hub: HubClient, step: tuple[Any, ...]) -> None:
    kind = step[0]
    http = hub.http
    if kind == "topic":
        await hub.post("/topics", {"name": f"Topic {step[1]} {next(NAMES)}"})
    elif kind == "workstream":
        topics = await _ids(hub, Topic)
        await hub.post("/workstreams", {"topic_id": _pick(topics, step[1]), "name": "WS"})
    elif kind == "task":
        ws = await _ids(hub, Workstream)
        members = await _ids(hub, Member)
        body: dict[str, Any] = {"workstream_id": _pick(ws, step[1]), "title": "T"}
        body["status"] = step[2]
        if step[3] is not None:
            body["assignee_id"] = _pick(members, step[3])
        await hub.post("/tasks", body)
    elif kind == "patch":
        tasks = await _ids(hub, Task)
        if not tasks:
            return
        patch: dict[str, Any] = {"title": f"Patched {step[1]}"}
        if step[2] is not None:
            patch["status"] = step[2]
        if step[3] is not None:  # a move: to a workstream of the same or another topic
            patch["workstream_id"] = _pick(await _ids(hub, Workstream), step[3])
        r = await http.patch(f"/tasks/{_pick(tasks, step[1])}", json=patch)
        assert r.status_code == 200, r.text
    elif kind == "delete":
        tasks = await _ids(hub, Task)
        if tasks:
            r = await http.delete(f"/tasks/{_pick(tasks, step[1])}")
            assert r.status_code == 204, r.text
    elif kind == "progress":  # on a task (of its topic) or on the topic only
        tasks = await _ids(hub, Task)
        body = {"event_type": "note", "summary": f"E {next(NAMES)}", "author": "a"}
        if tasks and step[2]:
            task = _pick(tasks, step[1])
            async with hub.hub.sessionmaker() as session:
                topic = await session.scalar(
                    select(Workstream.topic_id)
                    .join(Task, Task.workstream_id == Workstream.id)
                    .where(Task.id == task)
                )
            body |= {"topic_id": topic, "task_id": task}
        else:
            body["topic_id"] = _pick(await _ids(hub, Topic), step[1])
        await hub.post("/progress", body)
    elif kind == "decision":
        topics = await _ids(hub, Topic)
        body = {"topic_id": _pick(topics, step[1]), "title": "D", "blocking": step[2]}
        body["status"] = "open" if step[3] else "decided"
        await hub.post("/decisions", body)


async def _orm(hub: HubClient, step: tuple[Any, ...]) -> None:
    kind = step[0]
    async with hub.hub.sessionmaker() as session, session.begin():
        await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
        tasks = list(await session.scalars(select(Task.id).order_by(Task.id)))
        topics = list(await session.scalars(select(Topic.id).order_by(Topic.id)))
        if kind == "decide":
            rows = list(await session.scalars(select(Decision).order_by(Decision.id)))
            if rows:
                d = rows[step[1] % len(rows)]
                d.status = "decided" if d.status == "open" else "open"
        elif kind == "comment" and tasks:
            if step[2]:
                session.add(Comment(task_id=_pick(tasks, step[1]), body="c"))
            else:
                comments = list(await session.scalars(select(Comment).order_by(Comment.id)))
                if comments:
                    await session.delete(comments[step[1] % len(comments)])
        elif kind == "label" and tasks:
            labels = list(await session.scalars(select(Label.id).order_by(Label.id)))
            task, label = _pick(tasks, step[1]), _pick(labels, step[2])
            found = await session.get(TaskLabel, (task, label))
            if found is not None and not step[3]:
                await session.delete(found)
            elif found is None and step[3]:
                session.add(TaskLabel(task_id=task, label_id=label))
        elif kind == "new_label":
            session.add(Label(name=f"label-{step[1]}-{next(NAMES)}", color="#123456"))
        elif kind == "assign" and tasks:
            task = await session.get(Task, _pick(tasks, step[1]))
            assert task is not None
            members = list(await session.scalars(select(Member.id).order_by(Member.id)))
            task.assignee_id = None if step[2] is None else _pick(members, step[2])
            task.updated_at = utcnow()
        elif kind == "member":
            members = list(await session.scalars(select(Member).order_by(Member.id)))
            members[step[1] % len(members)].name = f"Member {step[2]}"
        elif kind == "milestone":
            rows = list(await session.scalars(select(Milestone).order_by(Milestone.id)))
            if step[2] and rows:
                rows[step[1] % len(rows)].done = not rows[step[1] % len(rows)].done
            else:
                session.add(Milestone(topic_id=_pick(topics, step[1]), title="M"))
        elif kind == "file":
            session.add(
                SessionFile(
                    topic_id=_pick(topics, step[1]),
                    filename="f.jsonl",
                    processed=step[2],
                    size_bytes=step[3],
                )
            )
        elif kind == "export":
            session.add(Export(topic_id=_pick(topics, step[1]), status=step[2]))
        elif kind in ("event", "event_delete"):
            # the newest events (in the window, or just past it), or any
            events = list(
                await session.scalars(
                    select(ProgressEvent).order_by(
                        ProgressEvent.created_at.desc(), ProgressEvent.id.desc()
                    )
                )
            )
            if events:
                near = events[: RECENT_PROGRESS + 3]
                ev = near[step[1] % len(near)] if step[1] % 2 else events[step[1] % len(events)]
                if kind == "event_delete":
                    await session.delete(ev)
                else:
                    # next to another event near the window's end (ties by id at 0)
                    other = near[(step[1] // 2 + RECENT_PROGRESS) % len(near)]
                    ev.created_at = other.created_at + timedelta(microseconds=step[2])
                    ev.summary = f"edited {next(NAMES)}"
                    if step[3] and tasks:
                        ev.task_id = _pick(tasks, step[1])
        elif kind == "event_task":  # the task a recent event shows changes
            shown = list(
                await session.scalars(
                    select(ProgressEvent.task_id)
                    .where(ProgressEvent.task_id.is_not(None))
                    .order_by(ProgressEvent.created_at.desc(), ProgressEvent.id.desc())
                    .limit(RECENT_PROGRESS)
                )
            )
            task_row = await session.get(Task, _pick(shown, step[1])) if shown else None
            if task_row is not None:
                task_row.status = step[2]
                if step[1] % 3 == 0:
                    task_row.title = f"Retitled {next(NAMES)}"
                task_row.updated_at = utcnow()
        elif kind == "rename":
            topic = await session.get(Topic, _pick(topics, step[1]))
            assert topic is not None
            topic.name = f"Renamed {step[2]} {next(NAMES)}"
        elif kind == "bulk" and tasks:
            # A bulk UPDATE: its rows are not known, the core is rebuilt.
            await session.execute(
                update(Task).where(Task.id == _pick(tasks, step[1])).values(status="done")
            )


async def _check(hub: HubClient) -> None:
    read = await hub.hub.summary.get()
    served = orjson.loads(read.body)
    builders = SummaryBuilders(hub.hub.sessionmaker)
    rebuilt = orjson.loads(orjson.dumps(await builders.core(None)))  # type: ignore[arg-type]
    rebuilt |= orjson.loads(orjson.dumps(await builders.progress(None)))  # type: ignore[arg-type]
    for key, value in rebuilt.items():
        if key != "generated_at":
            assert served[key] == value, key


@pytest.fixture
async def small_hub(tmp_path: Path) -> AsyncIterator[HubClient]:
    """One hub for every example: the state the steps leave grows from one to the next."""
    async with running_hub(tmp_path / "hub.db", seed_tasks=SEED) as client:
        # more events than the progress window lists: what leaves it is not known to it
        async with client.hub.sessionmaker() as session, session.begin():
            await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
            topics = list(await session.scalars(select(Topic.id).order_by(Topic.id)))
            at = utcnow()
            for k in range(RECENT_PROGRESS + 10):
                session.add(
                    ProgressEvent(
                        topic_id=_pick(topics, k),
                        event_type="note",
                        summary=f"extra {k}",
                        author="a",
                        created_at=at - timedelta(seconds=k % 7, microseconds=k),
                    )
                )
        yield client


@settings(
    max_examples=int(os.environ.get("FRESHKEEP_DELTA_EXAMPLES", "25")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(sequence=steps)
async def test_delta_equals_a_rebuild(
    small_hub: HubClient, sequence: list[tuple[Any, ...]]
) -> None:
    hub = small_hub
    await _check(hub)
    for step in sequence:
        if step[0] in ("topic", "workstream", "task", "patch", "delete", "decision", "progress"):
            await _api(hub, step)
        else:
            await _orm(hub, step)
        await _check(hub)
    # Not vacuous: the hub brought the core up to date by deltas, and fell back when it must.
    stats = hub.hub.summary.stats
    TOTAL["deltas"] = stats.deltas.get("core", 0)
    TOTAL["progress"] = stats.deltas.get("progress", 0)
    TOTAL["fallbacks"] = sum(stats.delta_fallbacks.values())
    REASONS.update(stats.delta_fallbacks)


TOTAL: dict[str, int] = {}
REASONS: dict[str, int] = {}


def test_the_property_applied_deltas_and_fell_back() -> None:
    """Run after the property: its sequences were applied as deltas, and some (a bulk
    UPDATE, a move to another topic) were rebuilt instead."""
    if not TOTAL:
        pytest.skip("run with test_delta_equals_a_rebuild")
    assert TOTAL["deltas"] > 10 and TOTAL["progress"] > 10 and TOTAL["fallbacks"] > 0
    # a bulk UPDATE's rows are unknown; a move to another topic cannot be applied
    assert {"unknown", "apply"} <= REASONS.keys(), REASONS


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(st.integers(0, 99), max_size=150),
    st.lists(
        st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10**6)),
        max_size=60,
    ),
)
def test_encoded_items_join_as_the_array(items: list[int], edits: list[tuple[str, int]]) -> None:
    """The core delta's encoded arrays (kept item by item, joined by chunks) read as the
    array they stand for, whatever is set, inserted or deleted where."""
    encoded, mirror = Encoded(items), list(items)
    assert b"[" + b"".join(encoded.parts()) + b"]" == orjson.dumps(mirror)
    for op, n in edits:
        if op == "insert":
            at = n % (len(mirror) + 1)
            mirror.insert(at, n)
            encoded.insert(at, n)
        elif mirror:
            at = n % len(mirror)
            if op == "set":
                mirror[at] = n
                encoded.set(at, n)
            else:
                del mirror[at]
                encoded.delete(at)
        assert b"[" + b"".join(encoded.parts()) + b"]" == orjson.dumps(mirror)
