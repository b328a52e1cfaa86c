"""Seed the hub with realistic-looking data, fast (bulk inserts), once per database.

The amount of data follows ``tasks``: for the default 10,000 tasks there are 50 topics, ~200
workstreams, 100 members, 2,500 progress events, 5,000 comments, ~15,000 task labels and so
on. The generator uses a fixed random seed, so two hubs seeded with the same size hold the same
data (up to timestamps, which are relative to now).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from freshkeep.demo import names
from freshkeep.demo.models import (
    DECISION_STATUSES,
    TASK_STATUSES,
    Base,
    Comment,
    Decision,
    Export,
    HubMeta,
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

DEFAULT_SEED_TASKS = 10_000
RNG_SEED = 20240611
SEEDED_KEY = "seeded_at"
_STATUS_WEIGHTS = (30, 20, 8, 42)  # todo, progress, blocked, done

Row = dict[str, Any]


@dataclass(slots=True)
class SeedReport:
    """What :func:`seed` did: ``seeded`` or why not, rows per table, and how long it took."""

    seeded: bool
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


async def seed(
    sessionmaker: async_sessionmaker[AsyncSession], tasks: int, *, rng_seed: int = RNG_SEED
) -> SeedReport:
    """Fill an empty hub database with ``tasks`` tasks and everything around them.

    Does nothing when ``tasks`` is 0, when the database was seeded before (a ``hub_meta`` row
    says so), or when it already holds topics. Everything is inserted in one transaction.
    """
    if tasks < 0:
        raise ValueError(f"seed_tasks must be >= 0, not {tasks!r}")
    started = time.perf_counter()
    async with sessionmaker() as session:
        marker = await session.get(HubMeta, SEEDED_KEY)
        if marker is not None:
            return SeedReport(False, f"the database was seeded at {marker.value}")
        if await session.scalar(select(func.count()).select_from(Topic)):
            return SeedReport(False, "the database already holds topics")
        if tasks == 0:
            return SeedReport(False, "seed_tasks is 0")
        counts = await _Seeder(session, random.Random(rng_seed)).fill(tasks)
        session.add(HubMeta(key=SEEDED_KEY, value=utcnow().isoformat()))
        await session.commit()
    return SeedReport(True, "seeded", counts, time.perf_counter() - started)


class _Seeder:
    def __init__(self, session: AsyncSession, rng: random.Random) -> None:
        self.session = session
        self.rng = rng
        self.now = utcnow()
        self.counts: dict[str, int] = {}
        self.tables: list[str] = []

    def ago(self, days: float) -> datetime:
        return self.now - timedelta(seconds=self.rng.uniform(60.0, days * 86_400.0))

    async def insert(
        self, model: type[Base], id_col: InstrumentedAttribute[int], rows: list[Row]
    ) -> list[int]:
        """Bulk insert ``rows`` with ids of their own; return the ids in the order of the rows.

        Ids are assigned here because RETURNING in the order of the rows costs one statement
        per row on SQLite; PostgreSQL sequences are moved past them afterwards.
        """
        self.counts[model.__tablename__] = len(rows)
        if not rows:
            return []
        start = await self.session.scalar(select(func.coalesce(func.max(id_col), 0))) or 0
        ids = list(range(start + 1, start + 1 + len(rows)))
        for ident, row in zip(ids, rows, strict=True):
            row["id"] = ident
        await self.session.execute(insert(cast(Table, model.__table__)), rows)  # Core: one batch
        self.tables.append(model.__tablename__)
        return ids

    async def fix_sequences(self) -> None:
        """Move PostgreSQL's id sequences past the ids given explicitly."""
        if (await self.session.connection()).dialect.name != "postgresql":
            return
        for table in self.tables:
            await self.session.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )

    async def fill(self, n_tasks: int) -> dict[str, int]:
        rng, now = self.rng, self.now
        topic_rows: list[Row] = [
            {
                "name": n,
                "description": f"Everything about {n.lower()}.",
                "created_at": self.ago(365),
            }
            for n in names.topic_names(rng, max(5, n_tasks // 200))
        ]
        topic_ids = await self.insert(Topic, Topic.id, topic_rows)
        people = [names.person(rng) for _ in range(max(10, n_tasks // 100))]
        members = [
            {"name": f"{f} {last}", "email": f"{f.lower()}.{last.lower()}{i}@example.com"}
            | {"role": rng.choice(names.ROLES)}
            for i, (f, last) in enumerate(people)
        ]
        member_ids = await self.insert(Member, Member.id, members)
        labels = [dict(zip(("name", "color"), x.split(":"), strict=True)) for x in names.LABELS]
        label_ids = await self.insert(Label, Label.id, labels)

        ws_rows: list[Row] = []
        ms_rows: list[Row] = []
        for tid in topic_ids:
            for name in rng.sample(names.STREAMS, rng.randint(3, 5)):
                owner = rng.choice(member_ids)
                ws_rows.append({"topic_id": tid, "name": name, "owner_id": owner})
            for k in range(rng.randint(2, 4)):
                title = f"M{k + 1}: {rng.choice(names.KINDS)} checkpoint"
                due = now + timedelta(days=rng.randint(-60, 120))
                ms_rows.append({"topic_id": tid, "title": title, "due_at": due, "done": k == 0})
        ws_ids = await self.insert(Workstream, Workstream.id, ws_rows)
        ms_ids = await self.insert(Milestone, Milestone.id, ms_rows)

        task_rows: list[Row] = []
        task_topic: list[int] = []
        for _ in range(n_tasks):
            w = rng.randrange(len(ws_ids))
            created = self.ago(180)
            task_rows.append(
                {
                    "workstream_id": ws_ids[w],
                    "title": names.task_title(rng),
                    "status": rng.choices(TASK_STATUSES, _STATUS_WEIGHTS)[0],
                    "assignee_id": rng.choice(member_ids) if rng.random() < 0.8 else None,
                    "milestone_id": rng.choice(ms_ids) if rng.random() < 0.3 else None,
                    "created_at": created,
                    "updated_at": created + (now - created) * rng.random(),
                }
            )
            task_topic.append(ws_rows[w]["topic_id"])
        task_ids = await self.insert(Task, Task.id, task_rows)
        titles = {tid: row["title"] for tid, row in zip(task_ids, task_rows, strict=True)}
        by_topic: dict[int, list[int]] = {}
        for tid, topic in zip(task_ids, task_topic, strict=True):
            by_topic.setdefault(topic, []).append(tid)

        tl_rows = [
            {"task_id": tid, "label_id": lid}
            for tid in task_ids
            for lid in rng.sample(label_ids, rng.choice((0, 1, 1, 2, 2, 3)))
        ]
        self.counts["task_labels"] = len(tl_rows)
        if tl_rows:
            await self.session.execute(insert(task_labels), tl_rows)

        await self.insert(Decision, Decision.id, self.decisions(topic_ids, n_tasks // 25))
        events: list[Row] = []
        for _ in range(n_tasks // 4):
            topic = rng.choice(topic_ids)
            kind = rng.choice(names.EVENT_TYPES)
            task = rng.choice(by_topic[topic]) if topic in by_topic and rng.random() < 0.7 else None
            subject = titles[task] if task is not None else rng.choice(names.OBJECTS)
            events.append(
                {
                    "topic_id": topic,
                    "task_id": task,
                    "event_type": kind,
                    "summary": names.EVENT_TEXT[kind].format(t=subject),
                    "author": members[rng.randrange(len(members))]["name"],
                    "created_at": self.ago(90),
                }
            )
        await self.insert(ProgressEvent, ProgressEvent.id, events)
        comments: list[Row] = [
            {"task_id": rng.choice(task_ids), "author_id": rng.choice(member_ids)}
            | {"body": rng.choice(names.COMMENTS), "created_at": self.ago(120)}
            for _ in range(n_tasks // 2)
        ]
        await self.insert(Comment, Comment.id, comments)
        await self.files_and_exports(topic_ids)
        await self.fix_sequences()
        return self.counts

    def decisions(self, topic_ids: list[int], count: int) -> list[Row]:
        rng = self.rng
        rows: list[Row] = []
        for _ in range(max(len(topic_ids), count)):
            status = rng.choices(DECISION_STATUSES, (35, 65))[0]
            created = self.ago(200)
            decided = created + timedelta(days=rng.randint(1, 20)) if status == "decided" else None
            title = rng.choice(names.DECISIONS).format(o=rng.choice(names.OBJECTS))
            blocking = status == "open" and rng.random() < 0.15
            rows.append(
                {"topic_id": rng.choice(topic_ids), "title": title, "status": status}
                | {"blocking": blocking, "created_at": created, "decided_at": decided}
            )
        return rows

    async def files_and_exports(self, topic_ids: list[int]) -> None:
        rng = self.rng
        files: list[Row] = []
        exports: list[Row] = []
        for tid in topic_ids:
            for k in range(rng.randint(3, 8)):
                name = f"session-{tid:03d}-{k:02d}.jsonl"
                size = rng.randint(2_000, 4_000_000)
                files.append({"topic_id": tid, "filename": name, "size_bytes": size})
                files[-1] |= {"processed": rng.random() < 0.8, "uploaded_at": self.ago(60)}
            for fmt in rng.sample(("json", "csv", "pdf"), rng.randint(1, 3)):
                status = rng.choices(("ready", "pending", "failed"), (80, 15, 5))[0]
                size = rng.randint(10_000, 900_000)
                exports.append({"topic_id": tid, "format": fmt, "status": status})
                exports[-1] |= {"size_bytes": size, "created_at": self.ago(30)}
        await self.insert(SessionFile, SessionFile.id, files)
        await self.insert(Export, Export.id, exports)
