"""The hub's ``summary`` view: the expensive aggregate served at ``GET /state/summary``.

Two sections, merged into one JSON object:

- ``core`` reads every table but ``progress_events`` (counts per topic, totals, blocking
  decisions, label usage, workload): ``generated_at``, ``totals``, ``topics``,
  ``blocking_decisions``, ``labels``, ``workload``.
- ``progress`` reads ``progress_events`` joined to ``tasks`` and ``topics``: ``recent_progress``,
  the 20 newest events, each with its topic's name and its task's *current* title and status.
  So posting an event rebuilds only this section, while a change to a task rebuilds both.

Both sections apply a commit's changed rows when they are known (``summary_delta``,
``progress_delta``), this process's or another's (carried by the bus), and rebuild otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Executable, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from freshkeep.core.policy import Policy
from freshkeep.demo.models import (
    CORE_TABLES,
    PROGRESS_TABLES,
    TASK_STATUSES,
    Comment,
    Decision,
    Export,
    Label,
    Member,
    Milestone,
    ProgressEvent,
    SessionFile,
    Task,
    Topic,
    Workstream,
    task_labels,
    utcnow,
)
from freshkeep.demo.progress_delta import ProgressDelta
from freshkeep.demo.summary_delta import CoreDelta, CoreIndex, workload
from freshkeep.keeper import Keeper
from freshkeep.sql.revisions import table_source
from freshkeep.views import BuildContext, Section, View

RECENT_PROGRESS = 20
SUMMARY_POLICY = Policy.swr(max_stale=30.0, stale_if_error=300.0, max_age=300.0)
"""The summary is served stale-while-revalidate for up to 30 s, and rebuilt once it is 300 s
old whatever its revisions say: the safety net for writes nothing can see."""
PROGRESS_POLICY = Policy.strict(stale_if_error=300.0, max_age=300.0)
"""The progress tail is small and read for what just happened: rebuilt in line when it
changes, even while the core is served stale."""
CORE_SOURCES = tuple(table_source(t) for t in CORE_TABLES)
PROGRESS_SOURCES = tuple(table_source(t) for t in PROGRESS_TABLES)


def _count_if(cond: ColumnElement[bool]) -> ColumnElement[int]:
    return _sum(case((cond, 1), else_=0))


def _sum(expr: ColumnElement[Any] | InstrumentedAttribute[int]) -> ColumnElement[int]:
    """``SUM`` as an integer (PostgreSQL sums integers to ``numeric``: Decimal in Python)."""
    return cast(func.coalesce(func.sum(expr), 0), BigInteger)


def _by_topic(rows: Sequence[Any]) -> dict[int, Any]:
    return {row[0]: row for row in rows}


def _pick(rows: dict[int, Any], topic: int, default: Sequence[Any] = (0, 0, 0)) -> list[Any]:
    """The columns after the topic id in ``topic``'s row, or ``default`` if it has none."""
    row = rows.get(topic)
    return list(default if row is None else row[1:])


def _named(rows: dict[int, Any], topic: int, *names: str) -> dict[str, Any]:
    """The columns after the topic id in ``topic``'s row, by name; zeros if it has none."""
    return dict(zip(names, _pick(rows, topic, (0,) * len(names)), strict=True))


class SummaryBuilders:
    """The section builders; each opens its own (read-only) session from ``sessionmaker``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker
        self.delta = CoreDelta(sessionmaker)
        """Applies a commit's changed rows to the ``core`` value (its ``apply``)."""
        self.progress_delta = ProgressDelta(sessionmaker, RECENT_PROGRESS)
        """Applies a commit's changed rows to the ``progress`` value (its ``apply``)."""

    async def core(self, ctx: BuildContext) -> dict[str, Any]:
        """Counts of everything but the progress tail."""
        generated_at = utcnow()
        async with self.sessionmaker() as session:
            totals = await self._totals(session)
            topics = await self._topics(session)
            blocking = (
                await session.execute(
                    select(Decision.id, Decision.topic_id, Topic.name, Decision.title)
                    .add_columns(Decision.created_at)
                    .join(Topic, Topic.id == Decision.topic_id)
                    .where(Decision.status == "open", Decision.blocking.is_(True))
                    .order_by(Decision.created_at, Decision.id)
                )
            ).all()
            # Ordered here, not by the database: ties are by name in code point order on every
            # database, whatever its collation (and as the delta orders them).
            labels = sorted(
                (
                    await session.execute(
                        select(Label.id, Label.name, Label.color, func.count(task_labels.c.task_id))
                        .outerjoin(task_labels, task_labels.c.label_id == Label.id)
                        .group_by(Label.id, Label.name, Label.color)
                    )
                ).all(),
                key=lambda r: (-r[3], r[1]),
            )
            open_tasks = (
                await session.execute(
                    select(Task.assignee_id, func.count(Task.id))
                    .where(Task.status != "done", Task.assignee_id.is_not(None))
                    .group_by(Task.assignee_id)
                )
            ).all()
            index = CoreIndex(
                "",
                dict((await session.execute(select(Workstream.id, Workstream.topic_id))).all()),
                {i: n for i, n, _c, _k in labels},
                dict((await session.execute(select(Member.id, Member.name))).all()),
                {m: k for m, k in open_tasks if k and m is not None},
            )
        value = {
            "generated_at": generated_at,
            "totals": totals,
            "topics": topics,
            "blocking_decisions": [
                {"id": i, "topic_id": t, "topic": tn, "title": title, "created_at": at}
                for i, t, tn, title, at in blocking
            ],
            "labels": [{"name": n, "color": c, "tasks": k} for _i, n, c, k in labels],
            "workload": workload(index),
        }
        self.delta.built(value, index)
        return value

    async def _totals(self, session: AsyncSession) -> dict[str, Any]:
        tables: dict[str, Any] = {
            "topics": Topic,
            "workstreams": Workstream,
            "tasks": Task,
            "decisions": Decision,
            "members": Member,
            "milestones": Milestone,
            "labels": Label,
            "task_labels": task_labels,
            "comments": Comment,
            "session_files": SessionFile,
            "exports": Export,
        }
        counts = [select(func.count()).select_from(t).scalar_subquery() for t in tables.values()]
        row = (await session.execute(select(*counts))).one()
        totals: dict[str, Any] = dict(zip(tables, row, strict=True))
        by_status = dict(
            (await session.execute(select(Task.status, func.count()).group_by(Task.status))).all()
        )
        totals["tasks_by_status"] = {s: by_status.get(s, 0) for s in TASK_STATUSES}
        totals["open_decisions"] = await session.scalar(
            select(func.count()).select_from(Decision).where(Decision.status == "open")
        )
        return totals

    async def _topics(self, session: AsyncSession) -> list[dict[str, Any]]:
        async def rows(stmt: Executable) -> dict[int, Any]:
            return _by_topic((await session.execute(stmt)).all())

        by_ws = Workstream.topic_id
        tasks = await rows(
            select(by_ws, func.count(Task.id), func.max(Task.updated_at))
            .add_columns(*(_count_if(Task.status == s) for s in TASK_STATUSES))
            .join(Workstream, Workstream.id == Task.workstream_id)
            .group_by(by_ws)
        )
        workstreams = await rows(select(by_ws, func.count()).group_by(by_ws))
        decisions = await rows(
            select(Decision.topic_id, _count_if(Decision.status == "open"))
            .add_columns(_count_if((Decision.status == "open") & Decision.blocking.is_(True)))
            .group_by(Decision.topic_id)
        )
        milestones = await rows(
            select(Milestone.topic_id, func.count(), _count_if(Milestone.done.is_(True))).group_by(
                Milestone.topic_id
            )
        )
        comments = await rows(
            select(by_ws, func.count(Comment.id))
            .join(Task, Task.id == Comment.task_id)
            .join(Workstream, Workstream.id == Task.workstream_id)
            .group_by(by_ws)
        )
        files = await rows(
            select(SessionFile.topic_id, func.count(), _count_if(SessionFile.processed.is_(True)))
            .add_columns(_sum(SessionFile.size_bytes))
            .group_by(SessionFile.topic_id)
        )
        exports = await rows(
            select(Export.topic_id, _count_if(Export.status == "ready"))
            .add_columns(_count_if(Export.status == "failed"))
            .group_by(Export.topic_id)
        )
        out = []
        for tid, name in await session.execute(select(Topic.id, Topic.name).order_by(Topic.id)):
            total, last, *by_status = _pick(tasks, tid, (0, None, *[0] * len(TASK_STATUSES)))
            open_, blocking_ = _pick(decisions, tid, (0, 0))
            out.append(
                {
                    "id": tid,
                    "name": name,
                    "workstreams": _pick(workstreams, tid, (0,))[0],
                    "tasks": dict(zip(TASK_STATUSES, by_status, strict=True)) | {"total": total},
                    "last_task_update": last,
                    "open_decisions": open_,
                    "blocking_decisions": blocking_,
                    "milestones": _named(milestones, tid, "total", "done"),
                    "comments": _pick(comments, tid, (0,))[0],
                    "session_files": _named(files, tid, "total", "processed", "bytes"),
                    "exports": _named(exports, tid, "ready", "failed"),
                }
            )
        return out

    async def progress(self, ctx: BuildContext) -> dict[str, Any]:
        """The newest progress events, with their topic's name and task's current state."""
        stmt = (
            select(ProgressEvent, Topic.name, Task.title, Task.status)
            .join(Topic, Topic.id == ProgressEvent.topic_id)
            .outerjoin(Task, Task.id == ProgressEvent.task_id)
            .order_by(ProgressEvent.created_at.desc(), ProgressEvent.id.desc())
            .limit(RECENT_PROGRESS)
        )
        async with self.sessionmaker() as session:
            rows = (await session.execute(stmt)).all()
        return {
            "recent_progress": [
                {
                    "id": ev.id,
                    "topic_id": ev.topic_id,
                    "topic": topic,
                    "task": None
                    if ev.task_id is None
                    else {"id": ev.task_id, "title": title, "status": status},
                    "event_type": ev.event_type,
                    "summary": ev.summary,
                    "author": ev.author,
                    "created_at": ev.created_at,
                }
                for ev, topic, title, status in rows
            ]
        }


def register_summary(
    keeper: Keeper,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    name: str = "summary",
    policy: Policy = SUMMARY_POLICY,
) -> View:
    """Register the hub's summary view on ``keeper`` and return it."""
    builders = SummaryBuilders(sessionmaker)
    return keeper.view(
        name,
        sections={
            "core": Section(builders.core, CORE_SOURCES, apply=builders.delta.apply, encoded=True),
            "progress": Section(
                builders.progress,
                PROGRESS_SOURCES,
                policy=PROGRESS_POLICY,
                apply=builders.progress_delta.apply,
            ),
        },
        policy=policy,
        public=True,
    )
