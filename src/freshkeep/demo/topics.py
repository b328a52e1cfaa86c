"""The hub's ``topic_summary`` view: one topic's summary, served at ``GET /topics/{id}/summary``.

A keyed view (``view.get(topic_id)``) whose entries depend on their own topic's rows only, so a
write to one topic leaves every other topic's entry a hit. Its sources are partitions:

- ``topics`` by ``id``, ``workstreams``, ``decisions`` and ``progress_events`` by ``topic_id``:
  declared, the partition of the key;
- ``tasks`` by ``workstream_id``: tasks name no topic, so the builder reads the topic's
  workstreams first, then depends on their partitions (``ctx.depend``) before it reads the
  tasks. A task moved from another topic's workstream bumps both workstreams' partitions.

The value: ``topic`` (id, name, description), ``workstreams`` (each with its task counts by
status and ``total``), ``tasks`` (the same counts over the topic), ``decisions`` (``open``,
``decided``, and the oldest open blocking ones), ``recent_progress`` (the newest events, with
their task's id but not its title: a title would make the entry depend on tasks outside the
partitions above). A topic that does not exist is ``None`` (JSON ``null``): the route answers
``404``, and creating the topic bumps its partition, so the next read builds it.

**Policy: strict** (rebuilt in line as soon as a source moves, including a write another hub
made and published on the bus), with the summary's safety nets: the last good entry is served
for up to 300 s while builds fail, and an entry is rebuilt once it is 300 s old whatever its
revisions say. A topic's summary is a few indexed queries, so serving it stale would buy
little; and a stale ``null`` would keep a topic just created a ``404``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from freshkeep.core.partitions import Partitioned
from freshkeep.core.policy import Policy
from freshkeep.demo.models import (
    DECISION_STATUSES,
    TASK_STATUSES,
    Decision,
    ProgressEvent,
    Task,
    Topic,
    Workstream,
    utcnow,
)
from freshkeep.keeper import Keeper
from freshkeep.sql.revisions import table_source
from freshkeep.views import BuildContext, Section, View

RECENT_PROGRESS = 10
"""How many of the topic's newest progress events the summary lists."""
BLOCKING_LISTED = 20
"""How many open blocking decisions the summary lists (the oldest first; all are counted)."""

TOPIC_SUMMARY_POLICY = Policy.strict(stale_if_error=300.0, max_age=300.0)
"""Rebuilt in line when the topic changes; the last good entry for 300 s while builds fail;
rebuilt at 300 s whatever its revisions say."""

TOPICS_BY_ID = table_source(Topic, by="id")
WORKSTREAMS_BY_TOPIC = table_source(Workstream, by="topic_id")
DECISIONS_BY_TOPIC = table_source(Decision, by="topic_id")
PROGRESS_BY_TOPIC = table_source(ProgressEvent, by="topic_id")
TASKS_BY_WORKSTREAM = table_source(Task, by="workstream_id")
"""Found while building (the topic's workstreams): declared with ``keeper.partition``, so the
write hooks bump a task's workstream partition."""

TOPIC_SOURCES: tuple[Partitioned, ...] = (
    TOPICS_BY_ID,
    WORKSTREAMS_BY_TOPIC,
    DECISIONS_BY_TOPIC,
    PROGRESS_BY_TOPIC,
)


def _counts(by_status: dict[str, int]) -> dict[str, int]:
    """Every status of :data:`TASK_STATUSES` (zeros included) and ``total`` (every row, any
    status)."""
    return {s: by_status.get(s, 0) for s in TASK_STATUSES} | {"total": sum(by_status.values())}


class TopicSummaryBuilder:
    """Builds one topic's summary in a (read-only) session of ``sessionmaker``."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def __call__(self, ctx: BuildContext) -> dict[str, Any] | None:
        topic_id = ctx.key
        generated_at = utcnow()
        async with self.sessionmaker() as session:
            topic = (
                await session.execute(
                    select(Topic.id, Topic.name, Topic.description).where(Topic.id == topic_id)
                )
            ).one_or_none()
            if topic is None:
                return None
            workstreams = (
                await session.execute(
                    select(Workstream.id, Workstream.name, Workstream.owner_id)
                    .where(Workstream.topic_id == topic_id)
                    .order_by(Workstream.id)
                )
            ).all()
            ids = [ws.id for ws in workstreams]
            # Before the tasks are read: a task written from now on invalidates this entry.
            await ctx.depend(*TASKS_BY_WORKSTREAM.of(*ids))
            tasks = await self._tasks(session, ids)
            decisions = await self._decisions(session, topic_id)
            progress = await self._progress(session, topic_id)
        by_status: dict[str, int] = {}
        for counts in tasks.values():
            for status, n in counts.items():
                by_status[status] = by_status.get(status, 0) + n
        return {
            "generated_at": generated_at,
            "topic": {"id": topic.id, "name": topic.name, "description": topic.description},
            "workstreams": [
                {
                    "id": ws.id,
                    "name": ws.name,
                    "owner_id": ws.owner_id,
                    "tasks": _counts(tasks.get(ws.id, {})),
                }
                for ws in workstreams
            ],
            "tasks": _counts(by_status),
            "decisions": decisions,
            "recent_progress": progress,
        }

    @staticmethod
    async def _tasks(session: AsyncSession, workstreams: list[int]) -> dict[int, dict[str, int]]:
        """Task counts by status of each of ``workstreams``."""
        out: dict[int, dict[str, int]] = {}
        if not workstreams:
            return out
        rows = await session.execute(
            select(Task.workstream_id, Task.status, func.count())
            .where(Task.workstream_id.in_(workstreams))
            .group_by(Task.workstream_id, Task.status)
        )
        for ws, status, n in rows:
            out.setdefault(ws, {})[status] = n
        return out

    @staticmethod
    async def _decisions(session: AsyncSession, topic_id: int) -> dict[str, Any]:
        by_status = dict(
            (
                await session.execute(
                    select(Decision.status, func.count())
                    .where(Decision.topic_id == topic_id)
                    .group_by(Decision.status)
                )
            ).all()
        )
        open_blocking = (Decision.topic_id == topic_id) & (Decision.status == "open")
        open_blocking &= Decision.blocking.is_(True)
        blocking = (
            await session.execute(
                select(Decision.id, Decision.title, Decision.created_at)
                .where(open_blocking)
                .order_by(Decision.created_at, Decision.id)
                .limit(BLOCKING_LISTED)
            )
        ).all()
        blocking_open = len(blocking)
        if blocking_open == BLOCKING_LISTED:  # there may be more: count them
            count = select(func.count()).select_from(Decision).where(open_blocking)
            blocking_open = await session.scalar(count) or 0
        return {s: by_status.get(s, 0) for s in DECISION_STATUSES} | {
            "blocking_open": blocking_open,
            "blocking": [{"id": i, "title": t, "created_at": at} for i, t, at in blocking],
        }

    @staticmethod
    async def _progress(session: AsyncSession, topic_id: int) -> list[dict[str, Any]]:
        events = await session.scalars(
            select(ProgressEvent)
            .where(ProgressEvent.topic_id == topic_id)
            .order_by(ProgressEvent.created_at.desc(), ProgressEvent.id.desc())
            .limit(RECENT_PROGRESS)
        )
        return [
            {
                "id": ev.id,
                "task_id": ev.task_id,
                "event_type": ev.event_type,
                "summary": ev.summary,
                "author": ev.author,
                "created_at": ev.created_at,
            }
            for ev in events
        ]


def register_topic_summary(
    keeper: Keeper,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    name: str = "topic_summary",
    policy: Policy = TOPIC_SUMMARY_POLICY,
) -> View:
    """Register the hub's per-topic summary view on ``keeper`` (and the partition of tasks by
    workstream its builder depends on) and return it. Read it with ``view.get(topic_id)``."""
    keeper.partition(TASKS_BY_WORKSTREAM)  # found while building: the write hooks must know it
    return keeper.view(
        name,
        sections={"topic": Section(TopicSummaryBuilder(sessionmaker), TOPIC_SOURCES)},
        policy=policy,
        public=True,
    )
