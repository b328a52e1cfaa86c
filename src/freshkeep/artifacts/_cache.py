"""The :class:`ArtifactCache`: files built ahead of time, handed out as URLs, collected when
they expire."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from freshkeep.artifacts._index import ArtifactIndex, IndexRow
from freshkeep.artifacts._maintenance import MAX_KEY_LENGTH, ArtifactMaintenance, _positive
from freshkeep.artifacts._signing import Grant, expiry, signed_query, verify
from freshkeep.artifacts._storage import FsspecStorage
from freshkeep.artifacts._types import (
    Artifact,
    ArtifactBacklog,
    ArtifactSnapshot,
    ArtifactStats,
    BuildFunc,
    Built,
    ReadStatus,
)
from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.component import Component, Kind
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

    from freshkeep.keeper import Keeper

log = logging.getLogger("freshkeep.artifacts")

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_WRITE_ATTEMPTS = 3


class ArtifactCache(ArtifactMaintenance, Component):
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
