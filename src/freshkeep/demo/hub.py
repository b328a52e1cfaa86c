"""The hub's moving parts (engine, sessions, keeper, write hooks, the summary and topic summary
views) and lifecycle."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from freshkeep.demo.exports import TopicExports
from freshkeep.demo.models import TRACKED, Base
from freshkeep.demo.seed import DEFAULT_SEED_TASKS, SeedReport, seed
from freshkeep.demo.summary import register_summary
from freshkeep.demo.topics import register_topic_summary
from freshkeep.exceptions import ConfigurationError
from freshkeep.integrations.sqlalchemy import Tracking, track
from freshkeep.keeper import Keeper
from freshkeep.sql.engine import async_url, display_url
from freshkeep.sql.engine import create_engine as _create_engine
from freshkeep.sql.revisions import SQLAlchemyRevisions
from freshkeep.sql.triggers import install_triggers_async
from freshkeep.views import View

log = logging.getLogger("freshkeep.demo")


def normalize_url(value: str) -> str:
    """A SQLAlchemy URL for the hub from a URL or a plain file path (see
    :func:`freshkeep.sql.engine.async_url`)."""
    return async_url(value)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets foreign keys, WAL, a 5 s busy timeout and real
    transactions (:func:`freshkeep.sql.engine.create_engine`)."""
    return _create_engine(url, sqlite_busy_timeout=5.0)


async def check_database(url: str) -> None:
    """Connect to ``url`` once; raise :class:`ConfigurationError` saying why that fails."""
    engine = create_engine(url)
    try:
        async with engine.connect():
            pass
    except Exception as exc:
        raise _cannot_open(url, exc) from exc
    finally:
        await engine.dispose()


def _cannot_open(url: str, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"the hub cannot open its database {display_url(url)!r}: {type(exc).__name__}: {exc}"
    )


@dataclass(eq=False)
class Hub:
    """Everything the hub's endpoints use. Create it with :meth:`create`, then :meth:`start`."""

    url: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    keeper: Keeper
    tracking: Tracking
    summary: View
    topic_summary: View
    """One topic's summary, keyed by topic id (``topic_summary.get(topic_id)``)."""
    exports: TopicExports
    seed_tasks: int
    triggers: bool = True
    seed_report: SeedReport | None = None
    started: bool = False

    @classmethod
    def create(
        cls,
        database_url: str,
        *,
        seed_tasks: int | None = None,
        triggers: bool = True,
        **keeper_kwargs: Any,
    ) -> Hub:
        """Build the hub for ``database_url`` (nothing connects yet). ``triggers``: install
        the change-capture triggers on the hub's tables at start, so writes by any other
        program (a script, the ``sqlite3`` shell, ``psql``) move the revisions too."""
        n = DEFAULT_SEED_TASKS if seed_tasks is None else seed_tasks
        if not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"seed_tasks must be an integer >= 0, not {seed_tasks!r}")
        url = normalize_url(database_url)
        engine = create_engine(url)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        keeper = Keeper.from_settings(SQLAlchemyRevisions(engine), **keeper_kwargs)
        tracking = track(keeper, sessionmaker, models=TRACKED)
        summary = register_summary(keeper, sessionmaker)
        topic_summary = register_topic_summary(keeper, sessionmaker)
        exports = TopicExports.create(engine, sessionmaker, keeper)  # prebuild on commit
        return cls(
            url,
            engine,
            sessionmaker,
            keeper,
            tracking,
            summary,
            topic_summary,
            exports,
            n,
            triggers,
        )

    async def start(self) -> None:
        """Create the tables (idempotent), seed an empty database, read the revisions, start
        the export jobs."""
        try:
            async with self.engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            await SQLAlchemyRevisions(self.engine).create_table()
        except Exception as exc:
            await self.engine.dispose()
            raise _cannot_open(self.url, exc) from exc
        try:
            self.seed_report = report = await seed(self.sessionmaker, self.seed_tasks)
            if report.seeded:
                rows = sum(report.counts.values())
                log.info("seeded %s rows in %.2f s: %s", rows, report.seconds, report.counts)
            else:
                log.info("not seeded: %s", report.reason)
            if self.triggers:  # after seeding: the seed's rows are counted by the hooks
                await install_triggers_async(
                    self.engine, self.tracking.tables or (), partitions=self.keeper.partitions
                )
            await self.keeper.start()
            await self.keeper.resync()
            await self.exports.start()
        except BaseException:
            await self.engine.dispose()
            raise
        self.started = True

    async def stop(self) -> None:
        """Wait for builds in flight, remove the write hooks, close the connections."""
        try:
            await self.exports.stop()
            await self.keeper.aclose()
        finally:
            self.exports.remove()
            self.tracking.remove()
            await self.engine.dispose()
            self.started = False
