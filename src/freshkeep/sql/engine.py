"""Engines: database URLs, SQLite set-up, and running work on a sync or an async engine.

One place for what every SQL part of freshkeep needs: the revision source, the state stores,
the job table, the artifact index, the migrations and the triggers.

- :func:`async_url` accepts a plain path, ``sqlite://``, ``postgresql://`` or the async forms
  (``sqlite+aiosqlite://``, ``postgresql+asyncpg://``) and returns the async form;
  :func:`display_url` hides the password for messages.
- :func:`create_engine` makes an async engine; SQLite gets WAL, a busy timeout, foreign keys
  and real transactions (:func:`sqlite_transactions`).
- :func:`writer_engine` begins SQLite transactions that write with ``BEGIN IMMEDIATE``.
- :func:`run_on` runs ``work(connection)`` on a sync or an async engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    from sqlalchemy import Connection, Engine, event
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

T = TypeVar("T")

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
"""The async driver freshkeep uses for a URL scheme that names no driver."""

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite connection waits for the write lock before ``database is locked``."""


def async_url(value: str) -> str:
    """An async SQLAlchemy URL from a URL or a plain file path.

    A path becomes ``sqlite+aiosqlite:///PATH``; ``sqlite://``, ``postgresql://`` and
    ``postgres://`` get their async driver (aiosqlite, asyncpg); a URL that names its driver is
    kept. Raises :class:`~freshkeep.exceptions.ConfigurationError` for an empty value or a URL
    SQLAlchemy cannot parse.
    """
    value = value.strip()
    if not value:
        raise ConfigurationError("the database URL is empty")
    if "://" not in value:
        return f"sqlite+aiosqlite:///{value}"
    try:
        url = make_url(value)
    except (SQLAlchemyError, ValueError) as exc:
        raise ConfigurationError(f"not a valid database URL: {value!r} ({exc})") from exc
    driver = ASYNC_DRIVERS.get(url.drivername)
    if driver is not None:
        url = url.set(drivername=driver)
    return url.render_as_string(hide_password=False)


def display_url(url: str | URL) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return "<unparseable URL>"


def create_engine(
    url: str, *, sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT, **kwargs: Any
) -> AsyncEngine:
    """An async engine for ``url`` (any form :func:`async_url` accepts).

    SQLite gets WAL journaling with ``synchronous=NORMAL``, a busy timeout of
    ``sqlite_busy_timeout`` seconds, foreign keys and real transactions
    (:func:`sqlite_transactions`); a SQLite file whose directory does not exist is refused
    before connecting. ``kwargs`` go to SQLAlchemy's
    ``create_async_engine``. Raises :class:`~freshkeep.exceptions.ConfigurationError` for a
    URL that cannot be used (its driver missing included).
    """
    full = async_url(url)
    try:
        engine = _create_async_engine(full, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot use the database URL {display_url(full)!r}: {exc}. Give a URL such as "
            "sqlite:///app.db or postgresql://user@host/db"
        ) from exc
    if engine.dialect.name == "sqlite":
        check_sqlite_path(engine.url.database)
        sqlite_pragmas(engine, busy_timeout=sqlite_busy_timeout)
        sqlite_transactions(engine)
    return engine


def sqlite_file(database: str | None) -> str | None:
    """``database`` (a SQLite URL's database part) if it names a file on disk; ``None`` for an
    in-memory or URI (``file:``) database, or none at all."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def require_existing(url: str) -> None:
    """Refuse a SQLite URL or path whose file does not exist: for commands that read what is
    there (a mistyped path must not leave an empty database behind). Other databases pass."""
    full = async_url(url)
    parsed = make_url(full)
    if parsed.get_backend_name() != "sqlite":
        return
    database = sqlite_file(parsed.database)
    if database is not None and not Path(database).expanduser().is_file():
        raise ConfigurationError(
            f"no SQLite database at {database!r} (nothing was created): check the path, or "
            "create it first (freshkeep migrate --db PATH)"
        )


def check_sqlite_path(database: str | None) -> None:
    """Refuse a SQLite file whose directory does not exist (before a connect fails on it)."""
    database = sqlite_file(database)
    if database is None:
        return
    parent = Path(database).expanduser().absolute().parent
    if not parent.is_dir():
        raise ConfigurationError(
            f"cannot use the SQLite database {database!r}: the directory {str(parent)!r} "
            "does not exist"
        )


def sqlite_pragmas(
    engine: AsyncEngine | Engine, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT
) -> None:
    """Set freshkeep's SQLite pragmas on every new connection of ``engine``: foreign keys,
    WAL journaling with ``synchronous=NORMAL`` (readers do not block the writer; a commit does
    not wait for a full fsync) and a busy timeout of ``busy_timeout`` seconds."""
    timeout_ms = round(busy_timeout * 1000)
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
        cursor.close()

    event.listen(sync, "connect", on_connect)


async def run_on(
    engine: AsyncEngine | Engine, work: Callable[[Connection], T], *, write: bool = False
) -> T:
    """Run ``work(connection)`` on a sync or an async engine and return its result.

    ``write=True`` runs it in a transaction that commits; else on a plain connection. A sync
    engine runs in a worker thread, so the event loop never blocks on it.
    """
    if isinstance(engine, AsyncEngine):
        ctx = engine.begin() if write else engine.connect()
        async with ctx as aconn:
            return cast(T, await aconn.run_sync(work))

    def run_sync() -> T:
        with engine.begin() if write else engine.connect() as conn:
            return work(conn)

    return await asyncio.to_thread(run_sync)


def check_engine(engine: object) -> AsyncEngine | Engine:
    """``engine`` if it is a SQLAlchemy ``Engine`` or ``AsyncEngine``; else a clear error."""
    if not isinstance(engine, AsyncEngine | Engine):
        raise ConfigurationError(f"expected a SQLAlchemy Engine or AsyncEngine, not {engine!r}")
    return engine


SQLITE_BEGIN = "freshkeep_sqlite_begin"
"""Execution option read by :func:`sqlite_transactions`: how to ``BEGIN`` (``IMMEDIATE``...)."""


def writer_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for transactions that write: on SQLite they begin with ``BEGIN IMMEDIATE``
    (see :func:`sqlite_transactions`), so one whose snapshot another writer outdated waits for
    the write lock instead of failing with ``SQLITE_BUSY_SNAPSHOT``. Other dialects: ``engine``
    itself. The returned engine shares ``engine``'s pool."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


def sqlite_transactions(engine: AsyncEngine | Engine) -> None:
    """Give a SQLite engine real transactions (SQLAlchemy's documented recipe).

    Python's sqlite3 driver (and aiosqlite on top of it) emits ``BEGIN`` only before the first
    INSERT/UPDATE/DELETE: a ``SAVEPOINT`` issued first opens the transaction itself and its
    ``RELEASE`` commits everything, so an outer rollback undoes nothing, and the counters
    freshkeep bumps at the real commit would miss those writes. This turns the driver's own
    transaction handling off and emits ``BEGIN`` when SQLAlchemy begins one. Other dialects
    are left alone.

    A transaction that reads before it writes should begin with ``BEGIN IMMEDIATE``: in WAL
    mode, a deferred transaction whose snapshot another connection's commit has outdated
    cannot start writing and fails at once with "database is locked" (``SQLITE_BUSY_SNAPSHOT``;
    the busy timeout does not apply). Ask for it per connection with the execution option
    :data:`SQLITE_BEGIN` (``"IMMEDIATE"`` or ``"EXCLUSIVE"``), e.g.
    ``await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})`` first thing in
    a writing session; it waits for the write lock (busy timeout) instead of failing.
    """
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync.dialect.name != "sqlite":
        return

    def no_driver_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    def begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN)
        if mode is None:
            conn.exec_driver_sql("BEGIN")
        elif str(mode).upper() in ("IMMEDIATE", "EXCLUSIVE", "DEFERRED"):
            conn.exec_driver_sql(f"BEGIN {str(mode).upper()}")
        else:
            raise ConfigurationError(
                f"{SQLITE_BEGIN} must be IMMEDIATE, EXCLUSIVE or DEFERRED, not {mode!r}"
            )

    event.listen(sync, "connect", no_driver_transactions)
    event.listen(sync, "begin", begin)


__all__ = [
    "ASYNC_DRIVERS",
    "SQLITE_BEGIN",
    "SQLITE_BUSY_TIMEOUT",
    "async_url",
    "check_engine",
    "check_sqlite_path",
    "create_engine",
    "display_url",
    "require_existing",
    "run_on",
    "sqlite_file",
    "sqlite_pragmas",
    "sqlite_transactions",
    "writer_engine",
]
