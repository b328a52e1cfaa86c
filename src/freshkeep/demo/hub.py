"""The hub's moving parts (engine, sessions, keeper, write hooks, summary view) and lifecycle."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_engine

from freshkeep.demo.exports import TopicExports
from freshkeep.demo.models import TRACKED, Base
from freshkeep.demo.seed import DEFAULT_SEED_TASKS, SeedReport, seed
from freshkeep.demo.summary import register_summary
from freshkeep.exceptions import ConfigurationError
from freshkeep.integrations.sqlalchemy import (
    SQLAlchemyRevisions,
    Tracking,
    sqlite_transactions,
    track,
)
from freshkeep.keeper import Keeper
from freshkeep.views import View

log = logging.getLogger("freshkeep.demo")

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def normalize_url(value: str) -> str:
    """A SQLAlchemy URL for the hub from a URL or a plain file path.

    A path becomes ``sqlite+aiosqlite:///PATH``; ``sqlite://`` and ``postgresql://`` URLs get
    their async driver (aiosqlite, asyncpg). Raises :class:`ConfigurationError` for a URL
    SQLAlchemy cannot parse.
    """
    value = value.strip()
    if not value:
        raise ConfigurationError("the hub's database URL is empty")
    if "://" not in value:
        return f"sqlite+aiosqlite:///{value}"
    try:
        url = make_url(value)
    except (SQLAlchemyError, ValueError) as exc:
        raise ConfigurationError(f"not a valid database URL: {value!r} ({exc})") from exc
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is not None:
        url = url.set(drivername=driver)
    return url.render_as_string(hide_password=False)


def display_url(url: str | URL) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable URL>"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets foreign keys, WAL, a busy timeout and real
    transactions."""
    try:
        engine = _create_engine(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot use the database URL {display_url(url)!r}: {exc}. Give an async SQLAlchemy "
            "URL such as sqlite+aiosqlite:///hub.db or postgresql+asyncpg://user@host/db"
        ) from exc
    if engine.dialect.name == "sqlite":
        _check_sqlite_path(engine.url.database)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
                cur.execute(f"PRAGMA {pragma}")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        sqlite_transactions(engine)  # real savepoints: see its docstring
    return engine


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


def _check_sqlite_path(database: str | None) -> None:
    # A failed connect leaves aiosqlite's worker thread calling into the event loop after it
    # may have closed: say what is wrong before connecting.
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    parent = Path(database).expanduser().absolute().parent
    if not parent.is_dir():
        raise ConfigurationError(
            f"cannot use the SQLite database {database!r}: the directory {str(parent)!r} "
            "does not exist"
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
    exports: TopicExports
    seed_tasks: int
    seed_report: SeedReport | None = None
    started: bool = False

    @classmethod
    def create(
        cls, database_url: str, *, seed_tasks: int | None = None, **keeper_kwargs: Any
    ) -> Hub:
        """Build the hub for ``database_url`` (nothing connects yet)."""
        n = DEFAULT_SEED_TASKS if seed_tasks is None else seed_tasks
        if not isinstance(n, int) or n < 0:
            raise ConfigurationError(f"seed_tasks must be an integer >= 0, not {seed_tasks!r}")
        url = normalize_url(database_url)
        engine = create_engine(url)
        sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        keeper = Keeper.from_settings(SQLAlchemyRevisions(engine), **keeper_kwargs)
        tracking = track(keeper, sessionmaker, models=TRACKED)
        summary = register_summary(keeper, sessionmaker)
        exports = TopicExports.create(engine, sessionmaker, keeper)  # prebuild on commit
        return cls(url, engine, sessionmaker, keeper, tracking, summary, exports, n)

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
