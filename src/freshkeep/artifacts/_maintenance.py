"""The garbage collection and the jobs of an :class:`~freshkeep.artifacts.ArtifactCache`
(a base class of it): :meth:`gc`, :meth:`register_jobs`, :meth:`enqueue_prebuild`."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from freshkeep.artifacts._index import ArtifactIndex
from freshkeep.artifacts._types import ArtifactStats
from freshkeep.core.clock import Clock
from freshkeep.exceptions import ConfigurationError
from freshkeep.ports import JobQueue, ObjectStorage

if TYPE_CHECKING:
    from freshkeep.jobs import EnqueueResult, JobContext

MAX_KEY_LENGTH = 1024
"""The longest key an artifact cache accepts (characters)."""
_DEDUP = re.compile(r"^[A-Za-z0-9_.:\-/]{1,180}$")


def _positive(name: str, value: float, *, zero: bool = False) -> float:
    if not isinstance(value, int | float) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{name} must be a number {bound}, not {value!r}")
    return float(value)


def check_prefix(cache: str, prefix: Any) -> str:
    """``prefix`` if it can scope a GC of ``cache``: a non-empty string of at most
    :data:`MAX_KEY_LENGTH` characters; else :class:`ConfigurationError` saying what to give."""
    if not isinstance(prefix, str) or not prefix or len(prefix) > MAX_KEY_LENGTH:
        raise ConfigurationError(
            f"artifact cache {cache!r}: a GC prefix must be the start of the keys to collect, "
            f"a non-empty string of at most {MAX_KEY_LENGTH} characters (leave it out to "
            f"collect the whole cache), not {prefix!r:.80}"
        )
    return prefix


class ArtifactMaintenance:
    """GC and jobs of :class:`~freshkeep.artifacts.ArtifactCache`."""

    name: str
    clock: Clock
    index: ArtifactIndex
    storage: ObjectStorage
    max_stale_on_error: float
    orphan_grace: float
    gc_batch: int
    gc_interval: float | None
    stats: ArtifactStats
    _queue: JobQueue | None

    if TYPE_CHECKING:

        async def prebuild(self, keys: Iterable[str], *, attempt: int = 1) -> dict[str, int]: ...

        def _check_key(self, key: Any) -> str: ...

    @property
    def prebuild_task(self) -> str:
        """The job task that prebuilds keys: ``artifacts.<name>.prebuild``."""
        return f"artifacts.{self.name}.prebuild"

    @property
    def gc_task(self) -> str:
        """The periodic job task that collects garbage: ``artifacts.<name>.gc``."""
        return f"artifacts.{self.name}.gc"

    # -- GC --------------------------------------------------------------------------------

    async def gc(
        self, now: float | None = None, *, orphans: bool = True, prefix: str | None = None
    ) -> dict[str, int]:
        """Delete expired rows, then the stored objects no row references; idempotent, and
        safe to run while :meth:`get` and :meth:`prebuild` build, here or elsewhere.

        1. Rows that expired more than ``max_stale_on_error`` ago are deleted, ``gc_batch`` at
           a time: a query finds the batch's last row by expiry, a ``DELETE`` takes the range.
        2. With ``orphans``, the storage is listed: objects without an object row, older than
           ``orphan_grace``, are recorded in the object table (adopted, with their
           modification time), and left-over temporary files older than that are deleted.
        3. Objects no row references and no build touched for ``orphan_grace`` are deleted,
           ``gc_batch`` at a time: a query picks candidates; then, in one transaction,
           ``DELETE … RETURNING`` their object rows (checking both conditions again), delete
           the stored objects, commit.

        Why a concurrent build that produces the same object is safe: a build first records
        the object (``touched_at = now``, one committed statement), then writes it if missing,
        then in one transaction touches it again and upserts its row (and starts over if the
        object row is gone). Step 3 only takes rows untouched for ``orphan_grace`` and not
        referenced; its ``DELETE`` locks them until the stored objects are deleted and the
        transaction commits. So either the build touched the object first (step 3 skips it:
        PostgreSQL re-checks ``touched_at`` on the row the build committed, SQLite runs one
        writer at a time), or step 3 took it first: the build's touch waits for the commit,
        then records the object anew and writes it after the deletion. A row is never written
        for an object that is not stored.

        ``prefix`` scopes the run to the keys that start with it (one tenant's or one topic's
        artifacts; compared exactly, case included): step 1 deletes only their expired rows
        (``DELETE … RETURNING`` the object ids), step 2 does not run (the storage is not kept
        per key), and step 3 considers only the objects those rows referenced, under the same
        locked checks: an object another row still uses, or that a build touched within
        ``orphan_grace``, stays. Objects it leaves (touched within the grace, or a run that
        failed between the steps) no longer belong to a key; the next cache-wide run collects
        them. A scoped run counts in ``gc_runs``, ``gc_rows`` and ``gc_objects``;
        ``last_gc_at`` and ``last_gc_seconds`` describe the last cache-wide run.

        ``now`` (epoch seconds) replaces the clock (tests). Returns counts: ``rows``,
        ``objects``, ``orphans`` (adopted), ``temp_files`` and ``statements``.
        """
        started = time.perf_counter()
        at = self.clock.time() if now is None else float(now)
        row_cutoff = at - self.max_stale_on_error
        cutoff = at - self.orphan_grace
        remove = partial(self.storage.delete, self.name)
        adopted = temps = st_adopt = 0
        if prefix is not None:
            prefix = check_prefix(self.name, prefix)
            rows, ids, st_rows = await self.index.delete_scoped_rows(
                self.name, prefix, row_cutoff, self.gc_batch
            )
            objects, st_objects = await self.index.collect_listed_objects(
                self.name, ids, cutoff, self.gc_batch, remove
            )
        else:
            rows, st_rows = await self.index.delete_rows(self.name, row_cutoff, self.gc_batch)
            if orphans:
                found, temp_files = await self.storage.list_objects(self.name)
                old = [(o.id, o.size, o.mtime) for o in found if o.mtime < cutoff]
                adopted, st_adopt = await self.index.adopt_objects(self.name, old)
                stale_temps = [p for p, mtime in temp_files if mtime < cutoff]
                await self.storage.delete_paths(stale_temps)
                temps = len(stale_temps)
            objects, st_objects = await self.index.collect_objects(
                self.name, cutoff, self.gc_batch, remove
            )
        s = self.stats
        s.gc_runs += 1
        s.gc_rows += rows
        s.gc_objects += objects
        s.gc_orphans += adopted
        s.gc_temp_files += temps
        if prefix is None:
            s.last_gc_at = self.clock.time()
            s.last_gc_seconds = time.perf_counter() - started
        return {
            "rows": rows,
            "objects": objects,
            "orphans": adopted,
            "temp_files": temps,
            "statements": st_rows + st_adopt + st_objects,
        }

    # -- jobs ------------------------------------------------------------------------------

    def register_jobs(
        self,
        queue: JobQueue,
        *,
        gc_every: float | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        """Register the tasks ``artifacts.<name>.prebuild`` (args ``{"keys": [...]}``) and
        ``artifacts.<name>.gc`` (args ``{}``, or ``{"prefix": ...}`` for a scoped run: see
        :meth:`gc`) on a :class:`~freshkeep.jobs.JobQueue`; with ``gc_every``,
        run the GC periodically (one run at a time across instances: a lock). A failed
        prebuild raises, so the queue retries it with its backoff."""
        self._queue = queue
        queue.task(
            self.prebuild_task,
            self._prebuild_job,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        gc_lock = self.gc_task
        queue.task(
            self.gc_task,
            self._gc_job,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            lock=lambda _args: gc_lock,
        )
        if gc_every is not None:
            self.gc_interval = _positive("gc_every", gc_every)
            queue.periodic(self.gc_task, self.gc_interval)

    async def enqueue_prebuild(
        self,
        queue: JobQueue,
        keys: Iterable[str],
        *,
        change_id: str | int,
        connection: Any = None,
    ) -> EnqueueResult:
        """Enqueue ONE prebuild job carrying every key. Its dedup key is derived from
        ``change_id`` (scope ``running``), so the same change is never built twice while its
        job waits or runs, and a later duplicate finds the keys fresh and skips them.
        ``connection``: the caller's transaction on the job database (the job commits with
        it). No keys: nothing is enqueued (``reason="empty"``)."""
        from freshkeep.jobs import EnqueueResult

        wanted = [self._check_key(k) for k in dict.fromkeys(keys)]
        if not wanted:
            return EnqueueResult(None, False, "empty")
        change = str(change_id)
        if not _DEDUP.match(change):
            change = hashlib.sha256(change.encode()).hexdigest()[:32]
        return await queue.enqueue(
            self.prebuild_task,
            {"keys": wanted},
            dedup_key=f"artifacts.{self.name}.prebuild:{change}",
            dedup_scope="running",
            connection=connection,
        )

    async def _prebuild_job(self, ctx: JobContext, args: dict[str, Any]) -> dict[str, int]:
        keys = args.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ConfigurationError(
                f"job {ctx.task!r}: args must be {{'keys': [str, ...]}}, not {args!r}"
            )
        return await self.prebuild(keys, attempt=ctx.attempt)

    async def _gc_job(self, ctx: JobContext, args: dict[str, Any]) -> dict[str, int]:
        prefix = args.get("prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise ConfigurationError(
                f"job {ctx.task!r}: args must be {{}} or {{'prefix': str}}, not {args!r}"
            )
        return await self.gc(prefix=prefix)
