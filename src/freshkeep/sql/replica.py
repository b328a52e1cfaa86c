"""Builds on a PostgreSQL read replica: the data and the revisions it is labelled with come
from one snapshot.

A view given a replica (``keeper.view(..., replica=engine)``) builds each section in one
``REPEATABLE READ`` read-only transaction on the replica. The transaction's first statement
reads the section's revision counters (``freshkeep_revisions``, replicated like any table),
which fixes its snapshot; the builder then reads its data through
:attr:`BuildSnapshot.session`, in the same snapshot. So the revisions an entry is labelled
with are exactly those of the data it holds, however far the replica lags (rule 3): a lagging
replica can make an entry older than the primary, never labelled newer than its data.

Before building, the counters read on the replica are compared with the revisions the keeper
knows were committed (its tracker, which a causal token has moved when it was newer): a
replica behind them is polled again, with a backoff, for up to ``wait`` seconds; then the
section is built on the primary, in the same kind of transaction. A replica that cannot be
reached is not waited for: the section is built on the primary at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from freshkeep.core.backoff import Backoff
from freshkeep.core.revision import Revision, is_older
from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

from freshkeep.sql.engine import display_url
from freshkeep.sql.schema import revisions_table

log = logging.getLogger("freshkeep.sql")

Where = Literal["replica", "primary"]
"""Where a section was built."""


@dataclass(slots=True, eq=False)
class BuildSnapshot:
    """One open ``REPEATABLE READ`` transaction a section is built in, on the replica or, when
    the replica lags behind what the build must reflect, on the primary."""

    on: Where
    """Where the transaction runs."""
    connection: AsyncConnection
    """The transaction's connection."""
    session: AsyncSession
    """An ORM session bound to the transaction: read the section's data through it."""
    revisions: dict[str, Revision]
    """The counters of the section's sources, read as the transaction's first statement."""
    waited: float = 0.0
    """Seconds from the first look at the replica to the beginning of this transaction."""
    lagged: int = 0
    """How many looks found the replica behind before this transaction (``0``: no wait)."""
    behind: bool = False
    """Whether a source added while building (:meth:`read`) was older here than the keeper
    knew (set by the caller; the view then builds the section again on the primary)."""

    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        """The counters of ``sources`` in this transaction's snapshot (``0`` for a source
        never written)."""
        found = await _counters(self.connection, sources)
        self.revisions.update(found)
        return found


async def _counters(conn: AsyncConnection, sources: Collection[str]) -> dict[str, Revision]:
    t = revisions_table
    out: dict[str, Revision] = dict.fromkeys(sources, 0)
    if out:
        rows = await conn.execute(select(t.c.source, t.c.revision).where(t.c.source.in_(out)))
        for source, rev in rows:
            out[source] = int(rev)
    return out


def _behind(found: Mapping[str, Revision], target: Mapping[str, Revision]) -> bool:
    return any(is_older(found.get(s, 0), rev) for s, rev in target.items())


class ReadReplica:
    """A PostgreSQL streaming replica that views build on, with the primary to fall back to.

    ``engine`` is an async engine on the replica, ``primary`` one on the primary (the database
    the write hooks bump counters in). ``wait`` bounds, in seconds, how long a build waits for
    a replica behind the revisions it must reflect before it builds on the primary
    (``FRESHKEEP_REPLICA_WAIT`` when made by :meth:`Keeper.view <freshkeep.Keeper.view>`);
    ``poll`` is the first pause between two looks at the replica's counters (doubling, up to
    ``max_poll``). ``timeout`` bounds one look (connecting, beginning, reading the counters):
    a replica that does not answer within it is treated as unreachable, and the section is
    built on the primary (``FRESHKEEP_REPLICA_TIMEOUT`` when made by the keeper).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        primary: AsyncEngine,
        wait: float = 1.0,
        poll: float = 0.01,
        max_poll: float = 0.2,
        timeout: float = 2.0,
    ) -> None:
        for what, value in (("replica", engine), ("primary", primary)):
            if not isinstance(value, AsyncEngine):
                raise ConfigurationError(
                    f"a read replica's {what} must be a SQLAlchemy AsyncEngine, not {value!r}"
                )
            if value.dialect.name != "postgresql":
                raise ConfigurationError(
                    f"read replicas are PostgreSQL streaming replicas; the {what} is "
                    f"{value.dialect.name} ({display_url(value.url)})"
                )
        if not wait >= 0:
            raise ConfigurationError(f"a read replica's wait must be >= 0 seconds, not {wait!r}")
        if not 0 < poll <= max_poll:
            raise ConfigurationError(
                f"a read replica needs 0 < poll <= max_poll, not poll={poll!r}, "
                f"max_poll={max_poll!r}"
            )
        if not timeout > 0:
            raise ConfigurationError(
                f"a read replica's timeout must be > 0 seconds, not {timeout!r}"
            )
        self.engine = engine
        self.primary = primary
        self.timeout = timeout
        self.wait = wait
        self.poll = poll
        self.max_poll = max_poll

    @property
    def url(self) -> str:
        """The replica's URL, its password hidden."""
        return display_url(self.engine.url)

    def __repr__(self) -> str:
        return f"ReadReplica({self.url}, wait={self.wait:g})"

    @asynccontextmanager
    async def open(
        self, sources: Collection[str], target: Mapping[str, Revision], *, primary: bool = False
    ) -> AsyncIterator[BuildSnapshot]:
        """Open the transaction a section is built in: on the replica once its counters of
        ``sources`` are at least ``target`` (polled for up to :attr:`wait` seconds), else on
        the primary (at once with ``primary=True``). The transaction is rolled back at the
        end: a build only reads."""
        started = time.monotonic()
        deadline = started + self.wait
        pause = Backoff(self.poll, self.max_poll)
        lagged = 0
        while not primary:
            try:
                conn, found = await self._look(sources)
            except (SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
                log.warning("read replica %s unreachable, building on the primary: %r", self, exc)
                break
            if not _behind(found, target):
                async with _session(conn) as session:
                    waited = time.monotonic() - started
                    yield BuildSnapshot("replica", conn, session, found, waited, lagged)
                return
            await _end(conn)
            lagged += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(pause.next(), left))
        conn = await _begin(self.primary)
        waited = time.monotonic() - started
        async with _session(conn) as session:
            found = await _counters(conn, sources)
            yield BuildSnapshot("primary", conn, session, found, waited, lagged)

    async def _look(self, sources: Collection[str]) -> tuple[AsyncConnection, dict[str, Revision]]:
        """Begin a transaction on the replica and read the counters of ``sources`` in it,
        within :attr:`timeout` seconds."""
        async with asyncio.timeout(self.timeout):
            conn = await _begin(self.engine)
            try:
                return conn, await _counters(conn, sources)
            except BaseException:
                with contextlib.suppress(Exception):
                    await _end(conn)
                raise


async def _begin(engine: AsyncEngine) -> AsyncConnection:
    """A connection in a read-only ``REPEATABLE READ`` transaction: its snapshot is taken at
    its first statement and kept to its end."""
    conn = await engine.connect()
    try:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        await conn.begin()
    except BaseException:
        await conn.close()
        raise
    return conn


async def _end(conn: AsyncConnection) -> None:
    try:
        await conn.rollback()
    finally:
        await conn.close()


@asynccontextmanager
async def _session(conn: AsyncConnection) -> AsyncIterator[AsyncSession]:
    session = AsyncSession(bind=conn, expire_on_commit=False)
    try:
        yield session
    finally:
        try:
            await session.close()
        finally:
            await _end(conn)


def as_replica(value: Any, *, primary: Any, wait: float, timeout: float = 2.0) -> ReadReplica:
    """``value`` as a :class:`ReadReplica`: itself, or an async engine on the replica with
    ``primary`` (the engine of the keeper's revision source) to fall back to."""
    if isinstance(value, ReadReplica):
        return value
    if primary is None:
        raise ConfigurationError(
            "a view built on a read replica needs the primary to fall back to: give the keeper "
            "SQLAlchemyRevisions(<primary async engine>), or pass "
            "replica=ReadReplica(<replica engine>, primary=<primary engine>)"
        )
    return ReadReplica(value, primary=primary, wait=wait, timeout=timeout)


__all__ = ["BuildSnapshot", "ReadReplica", "Where", "as_replica"]
