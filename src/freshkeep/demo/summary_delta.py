"""The delta of the summary's ``core`` section: the rows a commit changed, applied to its value.

:class:`CoreIndex` is what the value does not show but a delta needs, read by the same build
(after its revisions, like the rest): each workstream's topic, each label's name, each
member's name and open tasks (the value lists the top 10 only). :meth:`CoreDelta.apply` takes
the value and the changes (:class:`~freshkeep.core.changes.Change`) in commit order and keeps
both up to date; it raises :class:`~freshkeep.core.changes.Rebuild` when a change cannot be
applied exactly, and freshkeep rebuilds:

- the value is not the one the index was kept for (built elsewhere, or a delta failed);
- a task moves to another topic (its comments move with it, and their count per task is not
  kept), a workstream moves to another topic;
- the task with a topic's newest ``updated_at`` is deleted, or updated to an older one (the
  next newest is not kept);
- a topic, or a member with open tasks, is deleted; a row refers to one the index lacks.

``generated_at`` is the time of the last rebuild or delta: the one field of the value that is
not derived from the rows.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from freshkeep.core.changes import Change, Rebuild
from freshkeep.core.entry import Body, Chunks
from freshkeep.demo.models import TASK_STATUSES, Task, Workstream, utcnow

WORKLOAD = 10
"""Members listed in ``workload``."""


def plain(value: Any) -> Any:
    """``value`` as the encoded value reads back (a datetime as its ISO 8601 string)."""
    if isinstance(value, datetime):
        return orjson.loads(orjson.dumps(value))
    return value


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass
class CoreIndex:
    """What a delta of ``core`` needs beyond the value (see the module docstring)."""

    token: str
    """The ``generated_at`` of the value this index is kept for."""
    workstream_topic: dict[int, int]
    label_name: dict[int, str]
    member_name: dict[int, str]
    member_open: dict[int, int]
    """Open (not done) tasks of each member that has any."""
    dirty_workload: bool = field(default=False)
    by_open: dict[int, set[int]] = field(default_factory=dict)
    """The members with each count of open tasks (``member_open`` inverted)."""

    def __post_init__(self) -> None:
        for member, count in self.member_open.items():
            self.by_open.setdefault(count, set()).add(member)

    def move(self, member: int, by: int) -> None:
        """``member`` has ``by`` more open tasks."""
        old = self.member_open.get(member, 0)
        new = old + by
        if new < 0:
            raise Rebuild(f"member {member!r} would have {new} open tasks")
        if old:
            bucket = self.by_open[old]
            bucket.discard(member)
            if not bucket:
                del self.by_open[old]
        if new:
            self.member_open[member] = new
            self.by_open.setdefault(new, set()).add(member)
        else:
            self.member_open.pop(member, None)
        self.dirty_workload = True


def topic_entry(tid: int, name: str) -> dict[str, Any]:
    """A topic's entry in ``topics`` with nothing in it yet."""
    return {
        "id": tid,
        "name": name,
        "workstreams": 0,
        "tasks": dict.fromkeys(TASK_STATUSES, 0) | {"total": 0},
        "last_task_update": None,
        "open_decisions": 0,
        "blocking_decisions": 0,
        "milestones": {"total": 0, "done": 0},
        "comments": 0,
        "session_files": {"total": 0, "processed": 0, "bytes": 0},
        "exports": {"ready": 0, "failed": 0},
    }


def workload(index: CoreIndex) -> list[dict[str, Any]]:
    """The ``workload`` list: the members with the most open tasks (ties: by id). Costs the
    distinct counts and the members of the top counts, not every member."""
    top: list[tuple[int, int]] = []
    for count in sorted(index.by_open, reverse=True):
        members = index.by_open[count]
        take = WORKLOAD - len(top)
        top += [(m, count) for m in heapq.nsmallest(take, members)]
        if len(top) >= WORKLOAD:
            break
    return [{"member_id": m, "name": index.member_name[m], "open_tasks": k} for m, k in top]


class Encoded:
    """The items of a JSON array, each encoded once: :meth:`parts` joined is the array's body
    between its brackets (every item but the first starts with its comma), so that changing
    one item re-encodes that item only. Items are joined by chunks of :data:`CHUNK`, each kept
    until one of its items changes: the body's final join takes a few hundred parts, not one
    per item."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.pieces = [self._encode(i, x) for i, x in enumerate(items)]
        self.chunks: list[bytes | None] = []

    @staticmethod
    def _encode(at: int, item: Any) -> bytes:
        return (b"," if at else b"") + orjson.dumps(item)

    def _changed(self, at: int, *, shifted: bool = False) -> None:
        first = at // CHUNK
        for k in range(first, len(self.chunks) if shifted else min(first + 1, len(self.chunks))):
            self.chunks[k] = None

    def set(self, at: int, item: Any) -> None:
        self.pieces[at] = self._encode(at, item)
        self._changed(at)

    def insert(self, at: int, item: Any) -> None:
        self.pieces.insert(at, self._encode(at, item))
        if at == 0 and len(self.pieces) > 1:
            self.pieces[1] = b"," + self.pieces[1]
        self._changed(at, shifted=True)

    def delete(self, at: int) -> None:
        del self.pieces[at]
        if at == 0 and self.pieces:
            self.pieces[0] = self.pieces[0][1:]
        self._changed(at, shifted=True)

    def parts(self) -> list[bytes]:
        """The array's body, in chunks."""
        pieces, chunks = self.pieces, self.chunks
        count = -(-len(pieces) // CHUNK)
        del chunks[count:]
        chunks += [None] * (count - len(chunks))
        out: list[bytes] = []
        for k in range(count):
            chunk = chunks[k]
            if chunk is None:
                chunk = chunks[k] = b"".join(pieces[k * CHUNK : (k + 1) * CHUNK])
            out.append(chunk)
        return out


CHUNK = 64
"""Items per chunk of :class:`Encoded`."""


def _blocking_key(d: Mapping[str, Any]) -> tuple[datetime | None, int]:
    return _when(d["created_at"]), d["id"]


class CoreDelta:
    """Applies changes to the ``core`` value (one per view). It keeps the last value it built
    or applied changes to, decoded, with the :class:`CoreIndex` and each topic's encoded
    entry: a delta re-encodes what changed, so it costs what the change costs, not the size
    of the value (``Section(apply=..., encoded=True)``)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.index: CoreIndex | None = None
        self.value: dict[str, Any] = {}
        self.topics: dict[int, dict[str, Any]] = {}
        self.encoded = Encoded(())
        """The entries of ``topics``, encoded."""
        self.blocking = Encoded(())
        """The entries of ``blocking_decisions``, encoded."""
        self.body: Body = b""

    def built(self, value: Mapping[str, Any], index: CoreIndex) -> None:
        """A build produced ``value`` and ``index``."""
        self.value = orjson.loads(orjson.dumps(value))  # as it reads back
        index.token = self.value["generated_at"]
        self.topics = {t["id"]: t for t in self.value["topics"]}
        self.encoded = Encoded(self.value["topics"])
        self.blocking = Encoded(self.value["blocking_decisions"])
        self.body = orjson.dumps(self.value)
        self.index = index

    async def apply(self, body: Body, changes: Sequence[Change]) -> Chunks:
        """The ``core`` value (``body``, encoded) with ``changes`` applied, encoded: in the
        chunks of its parts, which nothing joins on the way to a response."""
        index, self.index = self.index, None  # until this succeeds, nothing matches it
        if index is None or (body is not self.body and body != self.body):
            raise Rebuild("not the value the index was kept for")
        value = self.value
        state = _State(value, index, self.topics, await self._task_topics(changes, index))
        state.blocking = self.blocking
        for change in changes:
            handler = _HANDLERS.get(change.table)
            if handler is None:
                raise Rebuild(f"no delta for {change.table}")
            handler(state, change)
        if index.dirty_workload:
            value["workload"] = workload(index)
            index.dirty_workload = False
        if state.labels_moved:
            value["labels"].sort(key=lambda x: (-x["tasks"], x["name"]))
        value["generated_at"] = index.token = plain(utcnow())
        if state.reordered:
            self.encoded = Encoded(value["topics"])
        else:
            for tid in state.dirty:
                self.encoded.set(state.position(tid), self.topics[tid])
        if state.renamed:
            self.blocking = Encoded(value["blocking_decisions"])
        body = self.body = Chunks(
            [
                b'{"generated_at":',
                orjson.dumps(value["generated_at"]),
                b',"totals":',
                orjson.dumps(value["totals"]),
                b',"topics":[',
                *self.encoded.parts(),
                b'],"blocking_decisions":[',
                *self.blocking.parts(),
                b'],"labels":',
                orjson.dumps(value["labels"]),
                b',"workload":',
                orjson.dumps(value["workload"]),
                b"}",
            ]
        )
        self.index = index
        return body

    async def _task_topics(self, changes: Sequence[Change], index: CoreIndex) -> dict[int, int]:
        """The topic of each task a comment change refers to: from the task changes among
        ``changes``, else read (a task's topic changes only with a rebuild)."""
        found: dict[int, int] = {}
        for c in changes:
            if c.table == "table:tasks":
                ws = index.workstream_topic.get(c.row["workstream_id"])
                if ws is not None:
                    found.setdefault(c.row["id"], ws)
        wanted = {c.row["task_id"] for c in changes if c.table == "table:comments"} - found.keys()
        if wanted:
            async with self.sessionmaker() as session:
                rows = await session.execute(
                    select(Task.id, Workstream.topic_id)
                    .join(Workstream, Workstream.id == Task.workstream_id)
                    .where(Task.id.in_(sorted(wanted)))
                )
                found.update({tid: topic for tid, topic in rows})
        return found


@dataclass
class _State:
    value: dict[str, Any]
    index: CoreIndex
    topics: dict[int, dict[str, Any]]
    task_topic: dict[int, int]
    labels_moved: bool = False
    reordered: bool = False
    """A topic was inserted or deleted."""
    dirty: set[int] = field(default_factory=set)
    """The topics whose entries changed."""
    renamed: bool = False
    """A topic's name changed (its blocking decisions show it)."""
    blocking: Encoded = field(default_factory=lambda: Encoded(()))

    def position(self, tid: int) -> int:
        """Where topic ``tid`` is in ``topics`` (sorted by id)."""
        topics = self.value["topics"]
        at = bisect.bisect_left(topics, tid, key=lambda t: t["id"])
        assert topics[at]["id"] == tid
        return at

    @property
    def totals(self) -> dict[str, Any]:
        return self.value["totals"]  # type: ignore[no-any-return]

    def topic(self, tid: Any) -> dict[str, Any]:
        found = self.topics.get(tid)
        if found is None:
            raise Rebuild(f"topic {tid!r} is not in the value")
        self.dirty.add(tid)
        return found

    def count(self, table: str, change: Change) -> None:
        """``totals[table]`` moved by an insert or delete."""
        if change.op != "update":
            self.totals[table] += 1 if change.op == "insert" else -1


def _images(change: Change) -> list[tuple[Mapping[str, Any], int]]:
    """The images of ``change`` with the sign of their contribution (before: -1)."""
    out: list[tuple[Mapping[str, Any], int]] = []
    if change.before is not None:
        out.append((change.before, -1))
    if change.after is not None:
        out.append((change.after, 1))
    return out


def _topics(s: _State, c: Change) -> None:
    s.count("topics", c)
    if c.op == "insert":
        row = c.row
        if row["id"] in s.topics:
            raise Rebuild("topic inserted twice")
        entry = topic_entry(row["id"], row["name"])
        s.topics[row["id"]] = entry
        bisect.insort(s.value["topics"], entry, key=lambda t: t["id"])
        s.reordered = True
    elif c.op == "update":
        entry = s.topic(c.row["id"])
        entry["name"] = c.row["name"]
        for d in s.value["blocking_decisions"]:
            if d["topic_id"] == entry["id"]:
                d["topic"] = entry["name"]
                s.renamed = True
    else:
        entry = s.topic(c.row["id"])
        if entry != topic_entry(entry["id"], entry["name"]):
            raise Rebuild("a topic with rows was deleted")
        s.value["topics"].remove(entry)
        del s.topics[entry["id"]]
        s.reordered = True


def _members(s: _State, c: Change) -> None:
    s.count("members", c)
    index, mid = s.index, c.row["id"]
    if c.op == "delete":
        if mid in index.member_open:
            raise Rebuild("a member with open tasks was deleted")
        index.member_name.pop(mid, None)
        return
    index.member_name[mid] = c.row["name"]
    if mid in index.member_open:
        index.dirty_workload = True


def _workstreams(s: _State, c: Change) -> None:
    s.count("workstreams", c)
    ws = s.index.workstream_topic
    if c.op == "update":
        if c.changed("topic_id"):
            raise Rebuild("a workstream moved to another topic")
        return
    s.topic(c.row["topic_id"])["workstreams"] += 1 if c.op == "insert" else -1
    if c.op == "insert":
        ws[c.row["id"]] = c.row["topic_id"]
    else:
        ws.pop(c.row["id"], None)


def _milestones(s: _State, c: Change) -> None:
    s.count("milestones", c)
    for row, sign in _images(c):
        m = s.topic(row["topic_id"])["milestones"]
        m["total"] += sign
        m["done"] += sign if row["done"] else 0


def _task_topic(s: _State, row: Mapping[str, Any]) -> int:
    topic = s.index.workstream_topic.get(row["workstream_id"])
    if topic is None:
        raise Rebuild(f"workstream {row['workstream_id']!r} is not in the index")
    return topic


def _tasks(s: _State, c: Change) -> None:
    s.count("tasks", c)
    index, by_status = s.index, s.totals["tasks_by_status"]
    topics = {_task_topic(s, row) for row, _ in _images(c)}
    if len(topics) > 1:
        raise Rebuild("a task moved to another topic")
    entry = s.topic(topics.pop())
    for row, sign in _images(c):
        status = row["status"]
        if status not in by_status:
            raise Rebuild(f"unknown task status {status!r}")
        by_status[status] += sign
        entry["tasks"][status] += sign
        entry["tasks"]["total"] += sign
        member = row["assignee_id"]
        if member is not None and status != "done":
            if member not in index.member_name:
                raise Rebuild(f"member {member!r} is not in the index")
            index.move(member, sign)
    last = _when(entry["last_task_update"])
    old = c.before["updated_at"] if c.before is not None else None
    new = c.after["updated_at"] if c.after is not None else None
    if entry["tasks"]["total"] == 0:
        entry["last_task_update"] = None
    elif old is not None and last is not None and old >= last and (new is None or new < old):
        raise Rebuild("the newest task of a topic was deleted or made older")
    elif new is not None and (last is None or new > last):
        entry["last_task_update"] = plain(new)


def _decisions(s: _State, c: Change) -> None:
    s.count("decisions", c)
    blocking: list[dict[str, Any]] = s.value["blocking_decisions"]
    for row, sign in _images(c):
        if row["status"] != "open":
            continue
        entry = s.topic(row["topic_id"])
        s.totals["open_decisions"] += sign
        entry["open_decisions"] += sign
        if not row["blocking"]:
            continue
        entry["blocking_decisions"] += sign
        key = (row["created_at"], row["id"])
        at = bisect.bisect_left(blocking, key, key=_blocking_key)
        if sign < 0:
            if at == len(blocking) or blocking[at]["id"] != row["id"]:
                raise Rebuild(f"decision {row['id']!r} is not among the blocking ones")
            del blocking[at]
            s.blocking.delete(at)
        else:
            item = {
                "id": row["id"],
                "topic_id": row["topic_id"],
                "topic": entry["name"],
                "title": row["title"],
                "created_at": plain(row["created_at"]),
            }
            blocking.insert(at, item)
            s.blocking.insert(at, item)


def _labels(s: _State, c: Change) -> None:
    s.count("labels", c)
    names, labels = s.index.label_name, s.value["labels"]
    s.labels_moved = True
    if c.op == "insert":
        names[c.row["id"]] = c.row["name"]
        labels.append({"name": c.row["name"], "color": c.row["color"], "tasks": 0})
        return
    assert c.before is not None
    entry = next((x for x in labels if x["name"] == c.before["name"]), None)
    if entry is None:
        raise Rebuild(f"label {c.before['name']!r} is not in the value")
    if c.op == "delete":
        labels.remove(entry)
        names.pop(c.row["id"], None)
    else:
        entry["name"], entry["color"] = c.row["name"], c.row["color"]
        names[c.row["id"]] = c.row["name"]


def _task_labels(s: _State, c: Change) -> None:
    s.count("task_labels", c)
    s.labels_moved = True
    for row, sign in _images(c):
        name = s.index.label_name.get(row["label_id"])
        entry = next((x for x in s.value["labels"] if x["name"] == name), None)
        if entry is None:
            raise Rebuild(f"label {row['label_id']!r} is not in the index")
        entry["tasks"] += sign


def _comments(s: _State, c: Change) -> None:
    s.count("comments", c)
    for row, sign in _images(c):
        topic = s.task_topic.get(row["task_id"])
        if topic is None:
            raise Rebuild(f"the topic of task {row['task_id']!r} is not known")
        s.topic(topic)["comments"] += sign


def _session_files(s: _State, c: Change) -> None:
    s.count("session_files", c)
    for row, sign in _images(c):
        f = s.topic(row["topic_id"])["session_files"]
        f["total"] += sign
        f["processed"] += sign if row["processed"] else 0
        f["bytes"] += sign * row["size_bytes"]


def _exports(s: _State, c: Change) -> None:
    s.count("exports", c)
    for row, sign in _images(c):
        if row["status"] in ("ready", "failed"):
            s.topic(row["topic_id"])["exports"][row["status"]] += sign


_HANDLERS: dict[str, Callable[[_State, Change], None]] = {
    "table:topics": _topics,
    "table:members": _members,
    "table:workstreams": _workstreams,
    "table:milestones": _milestones,
    "table:tasks": _tasks,
    "table:decisions": _decisions,
    "table:labels": _labels,
    "table:task_labels": _task_labels,
    "table:comments": _comments,
    "table:session_files": _session_files,
    "table:exports": _exports,
}
