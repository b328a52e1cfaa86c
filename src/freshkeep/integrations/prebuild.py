"""Prebuild artifacts on commit: one deduplicated prebuild job per committed write.

A write that changes what an artifact is built from should enqueue its prebuild in the same
transaction, so that the job commits with the write and a rolled-back write enqueues nothing.
:class:`PrebuildOnCommit` does that for the sessions of an ``async_sessionmaker``::

    def touched(session: Session, rows: Sequence[object]) -> set[int]:
        return {row.project_id for row in rows}          # at each flush: what the rows touch

    async def keys(session: AsyncSession, projects: set[int]) -> list[str]:
        return [f"{p}@{await bump_revision(session, p)}" for p in sorted(projects)]

    prebuild = PrebuildOnCommit(cache, queue, touched=touched, keys=keys, models=(Task,))
    prebuild.install(sessionmaker)                         # after freshkeep's track()
    ...
    async with sessionmaker() as session:
        session.add(Task(project_id=3, ...))
        await prebuild.commit(session)                     # flush, enqueue ONE job, commit

- ``touched(session, rows)`` runs in every flush (``after_flush``) with the new, changed and
  deleted rows of ``models`` (every mapped row if none given); it may read the attribute
  history of a row (a row moved between two parents touches both) and query through
  ``session.connection()``. What it returns is collected for the transaction.
- ``keys(session, touched)`` runs in :meth:`~PrebuildOnCommit.before_commit`, in the writing
  transaction, and returns the artifact keys (it may write, e.g. raise a revision that is
  part of the key). Without it, the touched values are the keys.
- One job per commit carries every key (:meth:`ArtifactCache.enqueue_prebuild
  <freshkeep.artifacts.ArtifactCache.enqueue_prebuild>`): its dedup key is made of the keys,
  so the same change never builds twice. The job is written through the job-queue port with
  ``connection=session``: the queue must live in the session's database (the embedded
  ``SQLJobQueue``, or procrastinate on the same PostgreSQL).

Commit through :meth:`~PrebuildOnCommit.commit` (or call :meth:`~PrebuildOnCommit.before_commit`
just before ``session.commit()``): SQLAlchemy's own ``before_commit`` event cannot await. A
transaction that commits touched rows without it enqueues nothing: it is counted in
:attr:`~PrebuildOnCommit.missed`, and the first one is logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    from sqlalchemy.orm import Session
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.jobs import EnqueueResult, JobQueue

log = logging.getLogger("freshkeep.artifacts")

T = TypeVar("T", bound=Hashable)

Touched = Callable[[Session, Sequence[Any]], Iterable[T]]
"""``touched(session, rows)``: what the rows a flush wrote touch (sync, in the flush)."""
Keys = Callable[[AsyncSession, set[T]], Awaitable[Iterable[str]]]
"""``keys(session, touched)``: the artifact keys of what a transaction touched (async, before
its commit, in its transaction)."""


class PrebuildOnCommit(Generic[T]):
    """Enqueue one prebuild job of ``cache`` on ``queue`` per commit that touched something
    (see the module docstring). :meth:`install` it on a session factory."""

    def __init__(
        self,
        cache: ArtifactCache,
        queue: JobQueue,
        *,
        touched: Touched[T],
        keys: Keys[T] | None = None,
        models: Iterable[type] = (),
    ) -> None:
        if not callable(touched):
            raise ConfigurationError("PrebuildOnCommit: touched must be callable")
        self.cache = cache
        self.queue = queue
        self._touched = touched
        self._keys = keys
        self.models = tuple(models)
        self.missed = 0
        """Commits of touched rows that went through neither :meth:`commit` nor
        :meth:`before_commit` (nothing was enqueued for them); the first is logged."""
        self._info = f"freshkeep.prebuild.{cache.name}.{id(self):x}"
        self._installed: list[tuple[async_sessionmaker[AsyncSession], Any, type]] = []
        # bound once: SQLAlchemy removes a listener by identity
        self._listeners: tuple[tuple[str, Callable[..., None]], ...] = (
            ("after_flush", self._after_flush),
            ("after_commit", self._after_commit),
            ("after_transaction_end", self._after_transaction_end),
        )

    # -- installing ------------------------------------------------------------------------

    def install(self, factory: async_sessionmaker[AsyncSession]) -> None:
        """Watch the flushes of ``factory``'s sessions (a class of their own, so sessions made
        elsewhere are not watched). Install it after :func:`freshkeep.integrations.sqlalchemy
        .track`, which also gives the factory a session class."""
        if not isinstance(factory, async_sessionmaker):
            raise ConfigurationError(
                f"PrebuildOnCommit.install() needs an async_sessionmaker, not {factory!r}"
            )
        before = factory.kw.get("sync_session_class")
        base = before or factory.class_.sync_session_class
        cls = type(f"Prebuild{base.__name__}", (base,), {})
        factory.kw["sync_session_class"] = cls
        for name, fn in self._listeners:
            event.listen(cls, name, fn)
        self._installed.append((factory, before, cls))

    def remove(self) -> None:
        """Undo every :meth:`install`."""
        while self._installed:
            factory, before, cls = self._installed.pop()
            for name, fn in self._listeners:
                if event.contains(cls, name, fn):
                    event.remove(cls, name, fn)
            if factory.kw.get("sync_session_class") is cls:
                if before is None:
                    factory.kw.pop("sync_session_class", None)
                else:
                    factory.kw["sync_session_class"] = before

    # -- the write path ----------------------------------------------------------------------

    def touched(self, session: AsyncSession | Session) -> set[T]:
        """What the flushes of ``session``'s transaction touched so far (not enqueued yet)."""
        sync = session.sync_session if isinstance(session, AsyncSession) else session
        return set(sync.info.get(self._info, ()))

    async def before_commit(self, session: AsyncSession) -> EnqueueResult | None:
        """In ``session``'s transaction: flush, turn what it touched into keys and enqueue ONE
        prebuild job carrying them (it commits, or rolls back, with the transaction).
        ``None`` when nothing was touched (or no key came of it)."""
        await session.flush()
        touched = self.touched(session)
        if not touched:
            return None
        if self._keys is None:  # the touched values are the keys: a deterministic order
            keys = sorted({str(k) for k in touched})
        else:
            keys = list(dict.fromkeys(str(k) for k in await self._keys(session, touched)))
        session.sync_session.info.pop(self._info, None)
        if not keys:
            return None
        return await self.cache.enqueue_prebuild(
            self.queue, keys, change_id=",".join(keys), connection=session
        )

    async def commit(self, session: AsyncSession) -> EnqueueResult | None:
        """:meth:`before_commit`, then ``session.commit()``; the enqueue result."""
        result = await self.before_commit(session)
        await session.commit()
        return result

    # -- the hooks ---------------------------------------------------------------------------

    def _after_flush(self, session: Session, _flush_context: Any) -> None:
        rows = [*session.new, *session.dirty, *session.deleted]
        if self.models:
            rows = [r for r in rows if isinstance(r, self.models)]
        if not rows:
            return
        found = set(self._touched(session, rows))
        if found:
            session.info.setdefault(self._info, set()).update(found)

    def _after_commit(self, session: Session) -> None:
        left = session.info.get(self._info)
        if left:
            self.missed += 1
            if self.missed == 1:  # once: a hot write path must not flood the log
                log.warning(
                    "a commit touched %d item(s) of artifact cache %r without "
                    "PrebuildOnCommit.commit() or before_commit(): no prebuild job was "
                    "enqueued (logged once; counted in PrebuildOnCommit.missed)",
                    len(left),
                    self.cache.name,
                )

    def _after_transaction_end(self, session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            session.info.pop(self._info, None)


def prebuild_on_commit(
    factory: async_sessionmaker[AsyncSession],
    cache: ArtifactCache,
    queue: JobQueue,
    *,
    touched: Touched[T],
    keys: Keys[T] | None = None,
    models: Iterable[type] = (),
) -> PrebuildOnCommit[T]:
    """A :class:`PrebuildOnCommit`, installed on ``factory``."""
    prebuild = PrebuildOnCommit(cache, queue, touched=touched, keys=keys, models=models)
    prebuild.install(factory)
    return prebuild


__all__ = ["Keys", "PrebuildOnCommit", "Touched", "prebuild_on_commit"]
