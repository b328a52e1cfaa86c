"""The :class:`ArtifactCache`: files built ahead of time, handed out as URLs, collected when
they expire."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

from freshkeep.artifacts._index import ArtifactIndex, IndexRow
from freshkeep.artifacts._signing import Grant, expiry, signed_query, verify
from freshkeep.artifacts._storage import FsspecStorage
from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.component import Component, Kind, Snapshot
from freshkeep.core.singleflight import SingleFlight
from freshkeep.exceptions import (
    ArtifactBuildError,
    ConfigurationError,
    StoreError,
)
from freshkeep.ports import JobQueue, ObjectStorage
from freshkeep.ports._storage import content_id
from freshkeep.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from freshkeep.jobs import EnqueueResult, JobContext
    from freshkeep.keeper import Keeper

log = logging.getLogger("freshkeep.artifacts")

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_DEDUP = re.compile(r"^[A-Za-z0-9_.:\-/]{1,180}$")
MAX_KEY_LENGTH = 1024
"""The longest key an artifact cache accepts (characters)."""
_WRITE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Built:
    """What a builder may return instead of bare bytes: the bytes and how to serve them."""

    data: bytes
    content_type: str | None = None
    """``Content-Type`` of the served file (default ``application/octet-stream``)."""
    filename: str | None = None
    """Offered as the download's file name (``Content-Disposition: attachment``)."""


BuildFunc = Callable[[str], Awaitable[bytes | Built]]
"""A builder: ``await build(key)`` returns the artifact's bytes, or a :class:`Built`."""

ReadStatus = Literal["hit", "miss", "error-stale"]


@dataclass(frozen=True, slots=True)
class Artifact:
    """An artifact handed out by :meth:`ArtifactCache.get`."""

    cache: str
    key: str
    id: str
    """The object's id: SHA-256 of its bytes (hex). Keys with the same bytes share it."""
    size: int
    url: str
    """Where to fetch it: a presigned URL (S3) or a signed URL of :func:`artifact_routes`."""
    url_expires_at: float
    """Epoch seconds after which :attr:`url` is refused."""
    created_at: float
    expires_at: float
    """Epoch seconds at which the artifact stops being fresh."""
    status: ReadStatus
    """``hit`` (fresh row), ``miss`` (built now) or ``error-stale`` (rebuild failed; the last
    good artifact, expired less than ``max_stale_on_error`` ago)."""
    content_type: str | None = None
    filename: str | None = None


@dataclass(slots=True)
class ArtifactStats:
    """Counters of an :class:`ArtifactCache` (this process)."""

    hits: int = 0
    """:meth:`~ArtifactCache.get` calls served from a fresh row, without building."""
    misses: int = 0
    """:meth:`~ArtifactCache.get` calls that found no fresh row."""
    built: int = 0
    """Artifacts built and recorded."""
    skipped: int = 0
    """Keys a prebuild skipped: their row was fresh."""
    failed: int = 0
    """Builds that failed (the builder, the storage or the index); nothing was recorded."""
    stale_served: int = 0
    """Reads that got the last good artifact because its rebuild failed."""
    unavailable: int = 0
    """Reads that raised ``ArtifactBuildError``: a failed build and nothing within bounds."""
    rewrites: int = 0
    """Builds whose object GC deleted between their steps; written again."""
    gc_runs: int = 0
    gc_rows: int = 0
    """Expired rows deleted by GC."""
    gc_objects: int = 0
    """Stored objects deleted by GC."""
    gc_orphans: int = 0
    """Stored objects found without an object row (adopted, deleted once past the grace)."""
    gc_temp_files: int = 0
    """Left-over temporary files of interrupted local writes deleted by GC."""
    last_gc_at: float | None = None
    last_gc_seconds: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactSnapshot(Snapshot):
    """An artifact cache's counters (those of :class:`ArtifactStats`) and bounds now
    (:meth:`ArtifactCache.snapshot`, no I/O)."""

    hits: int
    misses: int
    built: int
    skipped: int
    failed: int
    stale_served: int
    unavailable: int
    rewrites: int
    gc_runs: int
    gc_rows: int
    gc_objects: int
    gc_orphans: int
    gc_temp_files: int
    last_gc_at: float | None
    last_gc_seconds: float | None
    last_error: str | None
    last_error_at: float | None
    storage: str
    ttl: float
    max_stale_on_error: float
    orphan_grace: float
    in_flight: int
    """Builds running in this process."""
    pending: int
    """Keys of this process's prebuilds not built yet."""
    failing_keys: int
    """Keys whose last build in this process failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactBacklog:
    """What the health check of an artifact cache reads (:meth:`ArtifactCache.health_data`)."""

    prebuild_backlog: int
    """Prebuild jobs waiting in the job queue (every instance's) plus the keys of this
    process's prebuilds not built yet."""
    prebuild_jobs_waiting: int
    gc_backlog: int
    """Rows and objects the next GC would delete."""
    oldest_expired_age: float | None
    """Seconds since the oldest collectable row became collectable (``None``: none); it
    grows when GC does not run."""
    failing_keys: int
    last_error: str | None
    """The last build error (``"key: error"``), or ``None``."""
    stale_rows: int
    """Expired rows kept for stale-if-error."""
    collectable_rows: int
    collectable_objects: int
    in_flight: int


def _positive(name: str, value: float, *, zero: bool = False) -> float:
    if not isinstance(value, int | float) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{name} must be a number {bound}, not {value!r}")
    return float(value)


class ArtifactCache(Component):
    """Files derived from immutable keys, built ahead of time, handed out as URLs.

    ``build(key)`` (async) returns the artifact's bytes, or a :class:`Built` with a content
    type and a file name. Objects are content-addressed (id = SHA-256 of the bytes) in
    ``storage`` (a local directory or an fsspec URL such as ``s3://bucket/prefix``; default
    the ``artifact_storage_url`` setting); the index is two tables in ``index`` (an async
    SQLAlchemy engine, SQLite or PostgreSQL; run the migrations or :meth:`create_tables`).

    - :meth:`get` returns a fresh artifact's URL without building; otherwise builds once
      (single-flight per key in this process), writes the object, then the row.
    - :meth:`prebuild` builds the keys without a fresh row (a job: :meth:`register_jobs`,
      :meth:`enqueue_prebuild`).
    - :meth:`gc` deletes expired rows and the objects no row references, safely alongside
      builds (see :meth:`gc` for the protocol).
    - A failed rebuild serves the last good artifact up to ``max_stale_on_error`` seconds
      after its expiry, then raises :class:`~freshkeep.exceptions.ArtifactBuildError`.

    Unset bounds come from ``settings`` (``artifact_*``). ``url_base`` is where
    :func:`~freshkeep.artifacts.artifact_routes` is mounted, plus the cache's name (default
    ``/artifacts/<name>``). ``keeper``: register on it, so the cache shows in its stats.
    """

    kind: ClassVar[Kind] = "artifacts"

    def __init__(
        self,
        name: str,
        build: BuildFunc,
        *,
        index: AsyncEngine | ArtifactIndex,
        storage: str | ObjectStorage | None = None,
        storage_options: Mapping[str, Any] | None = None,
        ttl: float | None = None,
        max_stale_on_error: float | None = None,
        url_ttl: float | None = None,
        url_secret: str | bytes | None = None,
        url_base: str | None = None,
        gc_batch: int | None = None,
        orphan_grace: float | None = None,
        concurrency: int = 4,
        settings: Settings | None = None,
        keeper: Keeper | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"an artifact cache name must be 1-100 letters, digits, '_' or '-': {name!r}"
            )
        if not callable(build):
            raise ConfigurationError(f"artifact cache {name!r}: build must be callable")
        if not (
            inspect.iscoroutinefunction(build)
            or inspect.iscoroutinefunction(
                getattr(build, "__call__", None)  # noqa: B004 - an object with an async __call__
            )
        ):
            raise ConfigurationError(f"artifact cache {name!r}: build must be an async function")
        s = (
            settings
            if settings is not None
            else (keeper.settings if keeper is not None else Settings.load())
        )
        self.name = name
        self.settings = s
        self._builder = build
        self.index = index if isinstance(index, ArtifactIndex) else ArtifactIndex(index)
        self.storage: ObjectStorage
        if isinstance(storage, ObjectStorage):
            self.storage = storage
        else:
            self.storage = FsspecStorage(
                storage if storage is not None else s.artifact_storage_url,
                **dict(storage_options or {}),
            )
        try:
            self.ttl = _positive("ttl", s.artifact_ttl if ttl is None else ttl)
            self.max_stale_on_error = _positive(
                "max_stale_on_error",
                s.artifact_max_stale_on_error if max_stale_on_error is None else max_stale_on_error,
                zero=True,
            )
            self.url_ttl = _positive("url_ttl", s.artifact_url_ttl if url_ttl is None else url_ttl)
            self.orphan_grace = _positive(
                "orphan_grace", s.artifact_orphan_grace if orphan_grace is None else orphan_grace
            )
            batch = s.artifact_gc_batch if gc_batch is None else gc_batch
            if not isinstance(batch, int) or batch < 1:
                raise ConfigurationError(f"gc_batch must be an integer >= 1, not {batch!r}")
            if not isinstance(concurrency, int) or concurrency < 1:
                raise ConfigurationError(f"concurrency must be an integer >= 1: {concurrency!r}")
        except ConfigurationError as exc:
            raise ConfigurationError(f"artifact cache {name!r}: {exc}") from exc
        self.gc_batch = batch
        self.concurrency = concurrency
        if url_secret is None and s.artifact_url_secret is not None:
            url_secret = s.artifact_url_secret.get_secret_value()
        if url_secret is None:
            url_secret = secrets.token_bytes(32)  # one instance only: see the setting
        self._secret = url_secret.encode() if isinstance(url_secret, str) else bytes(url_secret)
        self.url_base = (url_base if url_base is not None else f"/artifacts/{name}").rstrip("/")
        self.clock = (
            clock if clock is not None else (keeper.clock if keeper is not None else SYSTEM_CLOCK)
        )
        self.stats = ArtifactStats()
        self._flights: SingleFlight[str, tuple[IndexRow, ReadStatus]] = SingleFlight()
        self._failing: dict[str, tuple[str, float]] = {}
        self._pending = 0
        self._queue: JobQueue | None = None
        self.gc_interval: float | None = None
        """Seconds between periodic GC jobs (set by :meth:`register_jobs`), or ``None``."""
        if keeper is not None:
            keeper.register(self)

    def __repr__(self) -> str:
        return f"ArtifactCache({self.name!r}, storage={self.storage.url!r})"

    @property
    def prebuild_task(self) -> str:
        """The job task that prebuilds keys: ``artifacts.<name>.prebuild``."""
        return f"artifacts.{self.name}.prebuild"

    @property
    def gc_task(self) -> str:
        """The periodic job task that collects garbage: ``artifacts.<name>.gc``."""
        return f"artifacts.{self.name}.gc"

    @property
    def in_flight(self) -> int:
        """Builds running in this process."""
        return len(self._flights)

    async def create_tables(self) -> None:
        """Create the index tables if they do not exist (migration ``0005`` creates them)."""
        await self.index.create_tables()

    # -- reads -----------------------------------------------------------------------------

    async def get(self, key: str) -> Artifact:
        """The artifact of ``key``: a fresh row's artifact without building; otherwise one
        build (every concurrent caller for the key in this process shares it), its object
        written, then its row.

        A failed build serves the key's last good artifact if it expired less than
        ``max_stale_on_error`` ago (status ``error-stale``); otherwise raises
        :class:`~freshkeep.exceptions.ArtifactBuildError`. An unreachable index raises
        :class:`~freshkeep.exceptions.StoreError`.
        """
        key = self._check_key(key)
        now = self.clock.time()
        row = await self.index.row(self.name, key)
        if row is not None and row.expires_at > now:
            self.stats.hits += 1
            return await self._artifact(row, "hit")
        self.stats.misses += 1
        task, _ = self._flights.start(key, partial(self._refresh, key, 1))
        try:
            built, status = await asyncio.shield(task)
        except ArtifactBuildError:
            self.stats.unavailable += 1
            raise
        if status == "error-stale":
            self.stats.stale_served += 1
        return await self._artifact(built, status)

    async def url_for(
        self,
        artifact_id: str,
        *,
        content_type: str | None = None,
        filename: str | None = None,
        ttl: float | None = None,
    ) -> tuple[str, float]:
        """A URL of object ``artifact_id`` valid ``ttl`` seconds (default ``url_ttl``) and the
        epoch second it expires: presigned on S3, else signed for :func:`artifact_routes`."""
        lifetime = self.url_ttl if ttl is None else _positive("ttl", ttl)
        expires = expiry(self.clock.time(), lifetime)
        params: dict[str, str] = {}
        if content_type:
            params["ResponseContentType"] = content_type
        if filename:
            params["ResponseContentDisposition"] = _disposition(filename)
        presigned = await self.storage.presign(
            self.name, artifact_id, max(1, int(lifetime)), params
        )
        if presigned is not None:
            return presigned, float(expires)
        grant = Grant(self.name, artifact_id, expires, content_type, filename)
        return f"{self.url_base}/{artifact_id}?{signed_query(self._secret, grant)}", float(expires)

    def verify(self, artifact_id: str, query: Mapping[str, str]) -> Grant:
        """Check a signed URL of this cache (its object id and query parameters); raises
        :class:`~freshkeep.exceptions.InvalidSignatureError` when it is tampered with,
        malformed or expired."""
        return verify(self._secret, self.name, artifact_id, query, self.clock.time())

    async def read_bytes(self, key: str) -> bytes:
        """The bytes of ``key``'s artifact (through :meth:`get`, then the storage)."""
        art = await self.get(key)
        return await self.storage.read(self.name, art.id)

    async def _artifact(self, row: IndexRow, status: ReadStatus) -> Artifact:
        url, url_expires = await self.url_for(
            row.artifact_id, content_type=row.content_type, filename=row.filename
        )
        return Artifact(
            self.name,
            row.key,
            row.artifact_id,
            row.size,
            url,
            url_expires,
            row.created_at,
            row.expires_at,
            status,
            row.content_type,
            row.filename,
        )

    # -- builds ----------------------------------------------------------------------------

    async def _refresh(self, key: str, attempt: int) -> tuple[IndexRow, ReadStatus]:
        """The flight of ``key``: the row again (another caller may have built it since the
        first look), else a build; on failure the last good row within bounds."""
        row = await self.index.row(self.name, key)
        if row is not None and row.expires_at > self.clock.time():
            return row, "hit"
        try:
            return await self._build(key, attempt), "miss"
        except Exception as exc:
            now = self.clock.time()
            if row is not None and now < row.expires_at + self.max_stale_on_error:
                log.warning(
                    "artifact cache %r: build of %r failed; serving the artifact expired "
                    "%.0f s ago: %r",
                    self.name,
                    key,
                    now - row.expires_at,
                    exc,
                )
                return row, "error-stale"
            raise ArtifactBuildError(
                f"artifact cache {self.name!r}: building {key!r} failed and no artifact within "
                f"max_stale_on_error ({self.max_stale_on_error:g} s) exists: {exc!r}",
                cache=self.name,
                key=key,
            ) from exc

    async def _build(self, key: str, attempt: int) -> IndexRow:
        """Build ``key``: object first (recorded, then written), row last."""
        started = time.perf_counter()
        try:
            out = await self._builder(key)
            data, ctype, fname = _unpack(self.name, key, out)
            seconds = time.perf_counter() - started
            oid = content_id(data)
            previous = self._failing.get(key)
            for _ in range(_WRITE_ATTEMPTS):
                # 1. record the object: GC leaves a touched object alone for orphan_grace.
                await self.index.touch_object(self.name, oid, len(data), self.clock.time())
                # 2. write it unless it is there (a touched object cannot be collected now).
                if not await self.storage.exists(self.name, oid):
                    await self.storage.put(self.name, oid, data)
                # 3. the row, with the object touched again in the same transaction.
                now = self.clock.time()
                row = IndexRow(
                    key,
                    oid,
                    len(data),
                    ctype,
                    fname,
                    now,
                    now + self.ttl,
                    seconds,
                    attempt,
                    None if previous is None else previous[0],
                )
                if await self.index.commit_build(self.name, row, now):
                    break
                self.stats.rewrites += 1  # GC deleted the object meanwhile: write it again
            else:
                raise StoreError(
                    f"artifact cache {self.name!r}: the object of {key!r} was collected "
                    f"{_WRITE_ATTEMPTS} times while it was written; is orphan_grace "
                    f"({self.orphan_grace:g} s) shorter than a write?"
                )
        except Exception as exc:
            self._failed(key, exc)
            raise
        self.stats.built += 1
        self._failing.pop(key, None)
        return row

    def _failed(self, key: str, exc: BaseException) -> None:
        now = self.clock.time()
        message = f"{key}: {exc!r}"
        self.stats.failed += 1
        self.stats.last_error = message
        self.stats.last_error_at = now
        self._failing[key] = (repr(exc), now)
        log.warning("artifact cache %r: building %r failed: %r", self.name, key, exc)

    async def prebuild(self, keys: Iterable[str], *, attempt: int = 1) -> dict[str, int]:
        """Build the ``keys`` that have no fresh row (``concurrency`` at a time); skip the
        others. Returns ``{"requested", "built", "skipped", "failed"}``. An empty list does
        nothing (no query, no build).

        When some keys failed, the others are still built, and then
        :class:`~freshkeep.exceptions.ArtifactBuildError` is raised (its ``counts`` attribute
        holds the figures), so a job engine retries the job; a retry skips what was built.
        ``attempt`` (the job's attempt number) is recorded on the rows.
        """
        wanted = [self._check_key(k) for k in dict.fromkeys(keys)]
        counts = {"requested": len(wanted), "built": 0, "skipped": 0, "failed": 0}
        if not wanted:
            return counts
        fresh = await self.index.fresh_keys(self.name, wanted, self.clock.time())
        todo = [k for k in wanted if k not in fresh]
        counts["skipped"] = len(wanted) - len(todo)
        self.stats.skipped += counts["skipped"]
        errors: list[tuple[str, BaseException]] = []
        gate = asyncio.Semaphore(self.concurrency)

        async def one(key: str) -> None:
            try:
                async with gate:
                    task, _ = self._flights.start(key, partial(self._refresh, key, attempt))
                    _, status = await asyncio.shield(task)
            except Exception as exc:
                counts["failed"] += 1
                cause = exc.__cause__ if isinstance(exc, ArtifactBuildError) else None
                errors.append((key, cause if isinstance(cause, Exception) else exc))
                return
            finally:
                self._pending -= 1
            if status == "miss":
                counts["built"] += 1
            elif status == "hit":
                counts["skipped"] += 1
                self.stats.skipped += 1
            else:  # error-stale: the build failed, the last good artifact stays served
                counts["failed"] += 1
                errors.append((key, RuntimeError(self._failing.get(key, ("?", 0))[0])))

        self._pending += len(todo)
        await asyncio.gather(*(one(k) for k in todo))
        if errors:
            key, first = errors[0]
            err = ArtifactBuildError(
                f"artifact cache {self.name!r}: {len(errors)} of {len(todo)} builds failed "
                f"(first: {key!r}: {first!r})",
                cache=self.name,
                key=key,
                counts=counts,
            )
            raise err from first
        return counts

    async def wait_idle(self) -> None:
        """Wait until no build is in flight in this process."""
        await self._flights.wait_all()

    # -- GC --------------------------------------------------------------------------------

    async def gc(self, now: float | None = None, *, orphans: bool = True) -> dict[str, int]:
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

        ``now`` (epoch seconds) replaces the clock (tests). Returns counts: ``rows``,
        ``objects``, ``orphans`` (adopted), ``temp_files`` and ``statements``.
        """
        started = time.perf_counter()
        at = self.clock.time() if now is None else float(now)
        rows, st_rows = await self.index.delete_rows(
            self.name, at - self.max_stale_on_error, self.gc_batch
        )
        adopted = temps = st_adopt = 0
        cutoff = at - self.orphan_grace
        if orphans:
            found, temp_files = await self.storage.list_objects(self.name)
            old = [(o.id, o.size, o.mtime) for o in found if o.mtime < cutoff]
            adopted, st_adopt = await self.index.adopt_objects(self.name, old)
            stale_temps = [p for p, mtime in temp_files if mtime < cutoff]
            await self.storage.delete_paths(stale_temps)
            temps = len(stale_temps)
        objects, st_objects = await self.index.collect_objects(
            self.name, cutoff, self.gc_batch, partial(self.storage.delete, self.name)
        )
        s = self.stats
        s.gc_runs += 1
        s.gc_rows += rows
        s.gc_objects += objects
        s.gc_orphans += adopted
        s.gc_temp_files += temps
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
        ``artifacts.<name>.gc`` on a :class:`~freshkeep.jobs.JobQueue`; with ``gc_every``,
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
        return await self.gc()

    # -- health ----------------------------------------------------------------------------

    def snapshot(self) -> ArtifactSnapshot:
        """Counters and bounds of this cache now (no I/O)."""
        st = self.stats
        return ArtifactSnapshot(
            name=self.name,
            hits=st.hits,
            misses=st.misses,
            built=st.built,
            skipped=st.skipped,
            failed=st.failed,
            stale_served=st.stale_served,
            unavailable=st.unavailable,
            rewrites=st.rewrites,
            gc_runs=st.gc_runs,
            gc_rows=st.gc_rows,
            gc_objects=st.gc_objects,
            gc_orphans=st.gc_orphans,
            gc_temp_files=st.gc_temp_files,
            last_gc_at=st.last_gc_at,
            last_gc_seconds=st.last_gc_seconds,
            last_error=st.last_error,
            last_error_at=st.last_error_at,
            storage=self.storage.url,
            ttl=self.ttl,
            max_stale_on_error=self.max_stale_on_error,
            orphan_grace=self.orphan_grace,
            in_flight=self.in_flight,
            pending=self._pending,
            failing_keys=len(self._failing),
        )

    async def health_data(self) -> ArtifactBacklog:
        """What a health check needs (three count queries, one more for the prebuild jobs
        waiting in the queue of :meth:`register_jobs`): see :class:`ArtifactBacklog`."""
        now = self.clock.time()
        b = await self.index.backlog(self.name, now, self.max_stale_on_error, self.orphan_grace)
        oldest = None
        if b.oldest_collectable is not None:
            oldest = max(0.0, now - (b.oldest_collectable + self.max_stale_on_error))
        queued = int(await self._queue.waiting(self.prebuild_task)) if self._queue else 0
        return ArtifactBacklog(
            prebuild_backlog=queued + self._pending,
            prebuild_jobs_waiting=queued,
            gc_backlog=b.collectable_rows + b.collectable_objects,
            oldest_expired_age=oldest,
            failing_keys=len(self._failing),
            last_error=self.stats.last_error,
            stale_rows=b.stale_rows,
            collectable_rows=b.collectable_rows,
            collectable_objects=b.collectable_objects,
            in_flight=self.in_flight,
        )

    def failing(self) -> dict[str, str]:
        """The keys whose last build in this process failed, with their error."""
        return {k: e for k, (e, _) in self._failing.items()}

    def _check_key(self, key: Any) -> str:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise ConfigurationError(
                f"artifact cache {self.name!r}: a key must be a non-empty string of at most "
                f"{MAX_KEY_LENGTH} characters, not {key!r:.80}"
            )
        return key


def _unpack(cache: str, key: str, out: Any) -> tuple[bytes, str | None, str | None]:
    if isinstance(out, Built):
        data, ctype, fname = out.data, out.content_type, out.filename
    else:
        data, ctype, fname = out, None, None
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(
            f"artifact cache {cache!r}: build({key!r}) must return bytes or Built, "
            f"not {type(data).__name__}"
        )
    return data, ctype, fname


def _disposition(filename: str) -> str:
    return f"attachment; filename*=UTF-8''{quote(filename)}"


__all__ = [
    "MAX_KEY_LENGTH",
    "Artifact",
    "ArtifactBacklog",
    "ArtifactCache",
    "ArtifactSnapshot",
    "ArtifactStats",
    "BuildFunc",
    "Built",
]
