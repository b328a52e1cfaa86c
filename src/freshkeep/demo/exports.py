"""Topic exports: a prebuilt artifact per topic, rebuilt ahead of time when the topic changes.

Each topic has an export bundle (a ZIP with ``topic.json``: the topic, its workstreams, tasks
and decisions; and ``tasks.csv`` / ``decisions.csv``). The bundle of a topic is an artifact of
the hub's :class:`~freshkeep.artifacts.ArtifactCache` ``topic-export`` under the key
``"<topic id>@<export revision>"``:

- every write that touches a topic (a task, decision, workstream or milestone of it, or the
  topic itself) raises the topic's *export revision* in the writing transaction (table
  ``topic_export_revisions``, not tracked by the summary's write hooks) and, in the same
  transaction, enqueues ONE prebuild job carrying the keys of every topic it touched (its
  dedup key is made of those keys, so the same change never builds twice): the library's
  :class:`~freshkeep.integrations.prebuild.PrebuildOnCommit`, given :func:`topics_of` (rows →
  topics, at each flush) and :func:`bump_export_keys` (topics → keys, before the commit);
- ``GET /topics/{id}/export`` reads the topic's revision (one indexed query) and asks the cache
  for that key: a fresh row answers without building (``X-Freshkeep-Cache: hit``); otherwise it
  is built once, now (``miss``), so a read never gets a bundle older than a write it follows;
- the bundle bytes are deterministic (fixed ZIP timestamps, sorted rows), so two revisions with
  the same content share one stored object.

Keys of older revisions are never read again; their rows expire with the cache's TTL and the
periodic GC job (or ``freshkeep gc``) deletes them and their objects. One topic's can be
collected alone (:meth:`TopicExports.collect`: the keys starting with :func:`export_prefix`),
by ``POST /admin/exports/gc?topic=ID`` (:mod:`freshkeep.demo.export_admin`) or
``freshkeep gc --prefix 'ID@'``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Integer, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, mapped_column

from freshkeep.artifacts import Artifact, ArtifactCache, Built
from freshkeep.demo.models import (
    Base,
    Decision,
    Milestone,
    Task,
    Topic,
    Workstream,
)
from freshkeep.exceptions import ConfigurationError
from freshkeep.integrations.prebuild import PrebuildOnCommit
from freshkeep.jobs import EnqueueResult, JobQueue, job_queue_from_settings
from freshkeep.keeper import Keeper

EXPORT_CACHE = "topic-export"
"""The name of the hub's artifact cache of topic exports."""
GC_EVERY = 3600.0
"""Seconds between the periodic GC jobs of the export cache."""
_ZIP_TIME = (2000, 1, 1, 0, 0, 0)


class TopicExportRevision(Base):
    """How many committed writes touched a topic's export (the key's revision part)."""

    __tablename__ = "topic_export_revisions"

    topic_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)


def export_key(topic_id: int, revision: int) -> str:
    """The artifact key of ``topic_id`` at ``revision``."""
    return f"{topic_id}@{revision}"


def export_prefix(topic_id: int) -> str:
    """The start of every export key of ``topic_id`` (``"7@"``: not ``"7"``, which would
    also match topics 70, 71, …)."""
    if not isinstance(topic_id, int) or isinstance(topic_id, bool) or topic_id < 0:
        raise ConfigurationError(f"a topic id is an integer >= 0, not {topic_id!r}")
    return f"{topic_id}@"


def parse_export_key(key: str) -> int:
    """The topic id of an export key; :class:`ConfigurationError` for a malformed key."""
    topic, sep, rev = key.partition("@")
    if not sep or not topic.isdigit() or not rev.isdigit():
        raise ConfigurationError(f"not a topic export key (TOPIC@REVISION): {key!r}")
    return int(topic)


# -- which topics a flush touched ------------------------------------------------------------


def topics_of(session: Session, objects: Iterable[Any]) -> set[int]:
    """The topics the rows ``objects`` of a flush touched (a row moved between topics touches
    both)."""
    topics: set[int] = set()
    workstreams: set[int] = set()
    for obj in objects:
        if isinstance(obj, Topic):
            topics.add(obj.id)
        elif isinstance(obj, Workstream | Decision | Milestone):
            topics.add(obj.topic_id)
            # a row moved to another topic touches both
            hist = _history(obj, "topic_id")
            topics.update(v for v in hist if v is not None)
        elif isinstance(obj, Task):
            workstreams.add(obj.workstream_id)
            workstreams.update(v for v in _history(obj, "workstream_id") if v is not None)
    if workstreams:
        rows = session.connection().execute(
            select(Workstream.topic_id).where(Workstream.id.in_(sorted(workstreams)))
        )
        topics.update(r[0] for r in rows)
    return topics


def _history(obj: Any, attr: str) -> list[Any]:
    state = inspect(obj)
    hist = state.attrs[attr].history
    return list(hist.deleted or ())


async def bump_export_revisions(session: AsyncSession, topic_ids: Iterable[int]) -> dict[int, int]:
    """Raise the export revision of each topic in ``session``'s transaction; the new values."""
    ids = sorted(set(topic_ids))
    if not ids:
        return {}
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise ConfigurationError(f"topic exports need PostgreSQL or SQLite, not {dialect}")
    table = TopicExportRevision.__table__
    ins = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    stmt = (
        ins.values([{"topic_id": i, "revision": 1} for i in ids])  # one statement
        .on_conflict_do_update(
            index_elements=[table.c.topic_id], set_={"revision": table.c.revision + 1}
        )
        .returning(table.c.topic_id, table.c.revision)
    )
    return {int(t): int(r) for t, r in await session.execute(stmt)}


async def export_revision(session: AsyncSession, topic_id: int) -> int:
    """The current export revision of ``topic_id`` (0: never written since exports exist)."""
    rev = await session.scalar(
        select(TopicExportRevision.revision).where(TopicExportRevision.topic_id == topic_id)
    )
    return int(rev or 0)


# -- the bundle -------------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _rows(objs: Iterable[Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{f: _iso(getattr(o, f)) for f in fields} for o in objs]


TASK_FIELDS = ("id", "workstream_id", "title", "status", "assignee_id", "created_at", "updated_at")
DECISION_FIELDS = ("id", "title", "status", "blocking", "created_at", "decided_at")
WORKSTREAM_FIELDS = ("id", "name", "owner_id", "created_at")


def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def bundle(
    topic: Mapping[str, Any],
    workstreams: list[dict[str, Any]],
    tasks: list[dict[str, Any]],
    decisions: list[dict[str, Any]],
) -> bytes:
    """The ZIP bytes of one topic's export; the same data always gives the same bytes."""
    doc = {"topic": dict(topic), "workstreams": workstreams, "tasks": tasks, "decisions": decisions}
    files = {
        "topic.json": orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
        "tasks.csv": _csv(tasks, TASK_FIELDS),
        "decisions.csv": _csv(decisions, DECISION_FIELDS),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return out.getvalue()


async def build_topic_export(factory: async_sessionmaker[AsyncSession], topic_id: int) -> bytes:
    """Read one topic's workstreams, tasks and decisions and return its bundle.

    Raises :class:`LookupError` when the topic does not exist."""
    async with factory() as session:
        topic = await session.get(Topic, topic_id)
        if topic is None:
            raise LookupError(f"topic {topic_id} does not exist")
        ws = list(
            await session.scalars(
                select(Workstream).where(Workstream.topic_id == topic_id).order_by(Workstream.id)
            )
        )
        tasks = list(
            await session.scalars(
                select(Task)
                .join(Workstream, Workstream.id == Task.workstream_id)
                .where(Workstream.topic_id == topic_id)
                .order_by(Task.id)
            )
        )
        decisions = list(
            await session.scalars(
                select(Decision).where(Decision.topic_id == topic_id).order_by(Decision.id)
            )
        )
    head = {"id": topic.id, "name": topic.name, "description": topic.description}
    head["created_at"] = _iso(topic.created_at)
    return bundle(
        head,
        _rows(ws, WORKSTREAM_FIELDS),
        _rows(tasks, TASK_FIELDS),
        _rows(decisions, DECISION_FIELDS),
    )


# -- the hub's export cache and its jobs --------------------------------------------------------


def default_storage(database_url: str, settings_storage: str, explicit: bool) -> str:
    """Where the hub keeps export objects: the ``artifact_storage_url`` setting when it is set;
    else a directory beside a SQLite database file (``hub.db`` → ``hub.db-artifacts``), or,
    for an in-memory or a server database, a directory under the system's temporary directory
    named after the database URL (so instances on one machine share it; instances on several
    machines need shared storage such as ``s3://``)."""
    if explicit:
        return settings_storage
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    db = url.database
    if (
        url.get_backend_name() == "sqlite"
        and db
        and db != ":memory:"
        and not db.startswith("file:")
    ):
        return str(Path(db).expanduser().absolute()) + "-artifacts"
    digest = hashlib.sha256(url.render_as_string(hide_password=False).encode()).hexdigest()
    return str(Path(tempfile.gettempdir()) / f"freshkeep-artifacts-{digest[:16]}")


async def bump_export_keys(session: AsyncSession, topic_ids: set[int]) -> list[str]:
    """Raise the export revision of each topic in ``session``'s transaction; their keys."""
    revisions = await bump_export_revisions(session, topic_ids)
    return [export_key(t, r) for t, r in sorted(revisions.items())]


@dataclass(eq=False)
class TopicExports:
    """The hub's topic exports: an :class:`ArtifactCache`, a job queue, and the write path
    (:attr:`prebuild`, installed on the hub's session factory)."""

    cache: ArtifactCache
    queue: JobQueue
    sessionmaker: async_sessionmaker[AsyncSession]
    prebuild: PrebuildOnCommit[int]

    @classmethod
    def create(
        cls,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        keeper: Keeper,
        *,
        storage: str | None = None,
        queue: JobQueue | None = None,
    ) -> TopicExports:
        """The export cache on ``engine`` (its index) and ``storage`` (default:
        :func:`default_storage`), with its jobs on ``queue`` (default: the queue the settings
        configure, on ``engine`` for the embedded runner)."""
        settings = keeper.settings
        if storage is None:
            explicit = "artifact_storage_url" in settings.model_fields_set
            storage = default_storage(
                engine.url.render_as_string(hide_password=False),
                settings.artifact_storage_url,
                explicit,
            )

        async def build(key: str) -> Built:
            topic_id = parse_export_key(key)
            data = await build_topic_export(sessionmaker, topic_id)
            return Built(data, "application/zip", f"topic-{topic_id}.zip")

        cache = ArtifactCache(EXPORT_CACHE, build, index=engine, storage=storage, keeper=keeper)
        if queue is None:
            queue = job_queue_from_settings(settings, engine=engine, clock=keeper.clock)
        cache.register_jobs(queue, gc_every=GC_EVERY)
        keeper.health.watch_jobs(queue)  # a prebuild that failed for good shows in health
        prebuild = PrebuildOnCommit(
            cache,
            queue,
            touched=topics_of,
            keys=bump_export_keys,
            models=(Topic, Workstream, Decision, Milestone, Task),
        )
        prebuild.install(sessionmaker)
        return cls(cache, queue, sessionmaker, prebuild)

    async def start(self) -> None:
        """Create the index tables if missing, then start the job workers."""
        await self.cache.create_tables()
        await self.queue.start()

    async def stop(self) -> None:
        """Stop the job workers (jobs not run yet stay queued for the next start), then wait
        for builds still in flight (a build outlives a cancelled job or request)."""
        await self.queue.aclose()
        await self.cache.wait_idle()

    def remove(self) -> None:
        """Stop watching the session factory's writes."""
        self.prebuild.remove()

    async def before_commit(self, session: AsyncSession) -> EnqueueResult | None:
        """In ``session``'s transaction: flush, raise the export revision of every topic the
        transaction touched, and enqueue one prebuild job with all their keys. ``None`` when
        no topic was touched."""
        return await self.prebuild.before_commit(session)

    async def collect(self, topic_id: int | None = None) -> dict[str, int]:
        """Run the export cache's GC once: for one topic's exports (its expired revisions and
        the objects only they used; safe while its export is being built), or, with
        ``topic_id=None``, for every topic. The counts of
        :meth:`~freshkeep.artifacts.ArtifactCache.gc`."""
        prefix = None if topic_id is None else export_prefix(topic_id)
        return await self.cache.gc(prefix=prefix)

    async def get(self, session: AsyncSession, topic_id: int) -> Artifact:
        """The export of ``topic_id`` at its current revision (built now if not prebuilt)."""
        revision = await export_revision(session, topic_id)
        return await self.cache.get(export_key(topic_id, revision))
