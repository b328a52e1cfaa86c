"""Run freshkeep's own Alembic migrations (:mod:`freshkeep.migrations`).

They keep their own version table, ``freshkeep_alembic_version``, so they never collide with
the application's Alembic history, and they are idempotent: revision ``0001`` adopts a
``freshkeep_revisions`` table that :meth:`SQLAlchemyRevisions.create_table()
<freshkeep.sql.SQLAlchemyRevisions.create_table>` created already. Tables
go to the connection's default schema (on PostgreSQL: the first schema of its ``search_path``).
On PostgreSQL an advisory lock serializes instances that migrate at the same time.

A *target* is a SQLAlchemy URL (sync or async driver; a path without ``://`` is a SQLite file),
an ``Engine``, a ``Connection``, an ``AsyncEngine`` or an ``AsyncConnection``. The functions
are synchronous; the ``*_async`` ones take the same targets and do not block the event loop.
A connection given in a transaction is used in it (the caller commits); otherwise freshkeep
begins and commits a transaction of its own.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection, Engine, create_engine, make_url, text
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("sqlalchemy", exc.name or "alembic") from exc

from freshkeep.sql.engine import async_url

T = TypeVar("T")

Target = str | Engine | Connection | AsyncEngine | AsyncConnection
"""Where to migrate: a URL, or a sync or async engine or connection."""

VERSION_TABLE = "freshkeep_alembic_version"
"""The Alembic version table of freshkeep's migrations."""

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
"""The Alembic script directory shipped in the package."""

_LOCK_KEY = 0x66726B5F6D6967  # "frk_mig": serializes concurrent migrations on PostgreSQL


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What :func:`upgrade` or :func:`downgrade` did."""

    before: str | None
    """The revision before (``None``: never migrated)."""
    after: str | None
    """The revision after."""
    applied: tuple[str, ...]
    """The revisions run, in order, as ``"<revision>: <message>"``."""

    @property
    def changed(self) -> bool:
        """Whether any revision ran (``False``: already up to date)."""
        return bool(self.applied)


def normalize_url(url: str) -> str:
    """The URL to migrate: ``sqlite:///<path>`` for a path without a scheme (the standard
    library's driver), ``postgresql+asyncpg://`` for ``postgresql://`` and ``postgres://`` (the
    driver of the ``postgres`` extra); any URL that names its driver is kept."""
    url = url.strip()
    if not url:
        raise ConfigurationError("the database URL is empty")
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.split("://", 1)[0] in ("postgresql", "postgres"):
        return async_url(url)
    return url


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of freshkeep's migrations, bound to ``connection``."""
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision of freshkeep's migrations."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


# -- running a function on a target ------------------------------------------------------


def _is_async_url(url: str) -> bool:
    try:
        return bool(getattr(make_url(url).get_dialect(), "is_async", False))
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigurationError(f"not a usable database URL: {url!r} ({exc})") from exc


def _in_transaction(conn: Connection, fn: Callable[[Connection], T]) -> T:
    if conn.in_transaction():
        return fn(conn)
    with conn.begin():
        return fn(conn)


def run(target: Target, fn: Callable[[Connection], T]) -> T:
    """Call ``fn`` with a sync connection of ``target``, in a transaction.

    An async URL is run on its own event loop (:func:`run_async` from async code).
    """
    if isinstance(target, str):
        url = normalize_url(target)
        if _is_async_url(url):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(run_async(url, fn))
            raise ConfigurationError(
                "an async database URL inside a running event loop: use the *_async function"
            )
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return _in_transaction(conn, fn)
        finally:
            engine.dispose()
    if isinstance(target, Engine):
        with target.connect() as conn:
            return _in_transaction(conn, fn)
    if isinstance(target, Connection):
        return _in_transaction(target, fn)
    if isinstance(target, AsyncEngine | AsyncConnection):
        raise ConfigurationError("an async engine or connection: use the *_async function")
    raise ConfigurationError(f"not a database URL, engine or connection: {target!r}")


async def run_async(target: Target, fn: Callable[[Connection], T]) -> T:
    """:func:`run` from async code: async targets run on the loop, sync ones in a thread."""
    if isinstance(target, str):
        url = normalize_url(target)
        if not _is_async_url(url):
            return await asyncio.to_thread(run, url, fn)
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return await _in_transaction_async(conn, fn)
        finally:
            await engine.dispose()
    if isinstance(target, AsyncEngine):
        async with target.connect() as conn:
            return await _in_transaction_async(conn, fn)
    if isinstance(target, AsyncConnection):
        return await _in_transaction_async(target, fn)
    return await asyncio.to_thread(run, target, fn)


async def _in_transaction_async(conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
    if conn.in_transaction():
        return await conn.run_sync(fn)
    async with conn.begin():
        return await conn.run_sync(fn)


# -- migrations ----------------------------------------------------------------------------


def _current(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _migrate(conn: Connection, revision: str, *, down: bool) -> MigrationResult:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    before = _current(conn)
    cfg = alembic_config(conn)
    if down:
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)
    after = _current(conn)
    script = ScriptDirectory.from_config(cfg)
    applied: list[str] = []
    if before != after:
        upper, lower = (before, after) if down else (after, before)
        steps = list(script.iterate_revisions(upper or "base", lower or "base"))
        if not down:
            steps.reverse()
        applied = [f"{s.revision}: {(s.doc or '').strip()}" for s in steps]
    return MigrationResult(before, after, tuple(applied))


def _upgrade(conn: Connection, revision: str = "head") -> MigrationResult:
    return _migrate(conn, revision, down=False)


def _downgrade(conn: Connection, revision: str) -> MigrationResult:
    return _migrate(conn, revision, down=True)


def current(target: Target) -> str | None:
    """The revision ``target``'s database is at (``None``: never migrated)."""
    return run(target, _current)


def upgrade(target: Target, revision: str = "head") -> MigrationResult:
    """Upgrade freshkeep's tables to ``revision`` (idempotent: a second run does nothing)."""
    return run(target, lambda conn: _upgrade(conn, revision))


def downgrade(target: Target, revision: str) -> MigrationResult:
    """Downgrade freshkeep's tables to ``revision`` (``"base"`` drops them: counters are lost)."""
    return run(target, lambda conn: _downgrade(conn, revision))


async def current_async(target: Target) -> str | None:
    """:func:`current` from async code."""
    return await run_async(target, _current)


async def upgrade_async(target: Target, revision: str = "head") -> MigrationResult:
    """:func:`upgrade` from async code."""
    return await run_async(target, lambda conn: _upgrade(conn, revision))


async def downgrade_async(target: Target, revision: str) -> MigrationResult:
    """:func:`downgrade` from async code."""
    return await run_async(target, lambda conn: _downgrade(conn, revision))


__all__: list[str] = [
    "MIGRATIONS",
    "VERSION_TABLE",
    "MigrationResult",
    "Target",
    "alembic_config",
    "current",
    "current_async",
    "downgrade",
    "downgrade_async",
    "head",
    "normalize_url",
    "run",
    "run_async",
    "upgrade",
    "upgrade_async",
]
