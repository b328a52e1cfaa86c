"""The distributed job queue: the :class:`~freshkeep.jobs.JobQueue` port on `procrastinate
<https://procrastinate.readthedocs.io>`_ (PostgreSQL, asyncio-native). Needs
``freshkeep[jobs]``.

How the port maps onto procrastinate:

- a task is a procrastinate task of the same name; a job's arguments are passed as one
  ``args`` keyword (periodic jobs also get procrastinate's ``timestamp``);
- ``dedup_key`` is both the job's ``queueing_lock`` (one waiting job per key, enforced by
  procrastinate's unique index) **and**, unless the task has a ``lock``, its ``lock``: a
  queueing lock alone lets a waiting job start while the previous one of its key still runs;
- ``dedup_scope="running"``: the insert is guarded by ``NOT EXISTS`` a running job with the
  key, in the same statement;
- ``lock(args)`` is the job's procrastinate ``lock`` (jobs of one lock run one at a time, in
  order);
- retries: a retry strategy with the port's doubling backoff capped at ``max_backoff``;
- periodic: procrastinate's periodic tasks (cron; ``every`` must map onto a cron step), one
  job per tick across workers by ``procrastinate_periodic_defers``; the misfire grace is
  checked when the job starts;
- stalled jobs: a periodic ``freshkeep.retry_stalled_jobs`` task puts back the running jobs of
  workers without a heartbeat for ``lease`` seconds;
- ``enqueue(connection=...)``: the job is inserted with procrastinate's
  ``procrastinate_defer_jobs_v1`` SQL function on the caller's SQLAlchemy connection, in a
  savepoint, so it commits or rolls back with the caller's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from freshkeep.exceptions import (
    ConfigurationError,
    EncodeError,
    JobQueueError,
    JobQueueTimeout,
    missing_extra,
)
from freshkeep.jobs._types import (
    DedupScope,
    EnqueueResult,
    JobContext,
    JobQueue,
    JobQueueSnapshot,
    PeriodicSpec,
    TaskSpec,
    job_span,
)

try:
    import procrastinate
    from procrastinate import exceptions as pe
    from procrastinate import jobs as pjobs
    from procrastinate.retry import BaseRetryStrategy, RetryDecision
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("jobs", exc.name or "procrastinate") from exc

log = logging.getLogger("freshkeep.jobs")

QUEUE = "freshkeep"
"""The procrastinate queue freshkeep's jobs go to."""

STALLED_TASK = "freshkeep.retry_stalled_jobs"
"""The periodic task that puts back the jobs of dead workers."""

_QUEUEING_LOCK_INDEX = "procrastinate_jobs_queueing_lock_idx_v1"

# procrastinate's defer function; the WHERE clauses skip a duplicate without raising in the
# common case (the unique index still decides under a race).
_DEFER_SQL = """
SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(
    {queue}, {task}, 0, {lock}, {qlock}, CAST({args} AS jsonb),
    CASE WHEN CAST({delay} AS double precision) > 0
         THEN now() + make_interval(secs => CAST({delay} AS double precision)) END
)::procrastinate_job_to_defer_v1])) AS id
WHERE NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs
    WHERE queueing_lock = CAST({qlock} AS text) AND status = 'todo')
  AND NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs
    WHERE queueing_lock = CAST({inflight} AS text) AND status = 'doing')
"""
_PARAMS = ("queue", "task", "lock", "qlock", "args", "delay", "inflight")
_PSYCOPG_DEFER = _DEFER_SQL.format(**{p: f"%({p})s" for p in _PARAMS})
_SQLALCHEMY_DEFER = _DEFER_SQL.format(**{p: f":{p}" for p in _PARAMS})

_STATUS_SQL = """
SELECT status FROM procrastinate_jobs
WHERE queueing_lock = %(key)s AND status IN ('todo', 'doing')
"""

_COUNTS_SQL = """
SELECT
  count(*) FILTER (WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now()))
    AS ready,
  count(*) FILTER (WHERE status = 'todo') AS queued,
  count(*) FILTER (WHERE status = 'doing') AS running
FROM procrastinate_jobs
WHERE queue_name = %(queue)s AND task_name = ANY(%(tasks)s)
"""


_WAITING_SQL = """
SELECT count(*) AS n FROM procrastinate_jobs
WHERE queue_name = %(queue)s AND task_name = %(task)s AND status = 'todo'
"""


def conninfo(url: str) -> str:
    """A libpq connection string from a SQLAlchemy PostgreSQL URL (drops ``+driver``)."""
    if "://" not in url:
        raise ConfigurationError(f"the procrastinate job queue needs a PostgreSQL URL: {url!r}")
    scheme, rest = url.split("://", 1)
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"the procrastinate job queue needs PostgreSQL, not {scheme!r} ({url!r})"
        )
    return f"postgresql://{rest}"


def cron_for(every: float) -> str:
    """The cron expression (seconds as a 6th field) that fires every ``every`` seconds,
    aligned like the embedded runner's ticks. Raises :class:`ConfigurationError` for a period
    no cron step expresses."""
    if every == int(every):
        n = int(every)
        if 0 < n < 60 and 60 % n == 0:
            return f"* * * * * */{n}"
        if n % 60 == 0 and n < 3600 and 3600 % n == 0:
            return f"*/{n // 60} * * * *"
        if n % 3600 == 0 and n < 86400 and 86400 % n == 0:
            return f"0 */{n // 3600} * * *"
        if n == 86400:
            return "0 0 * * *"
    raise ConfigurationError(
        f"procrastinate runs periodic jobs on a cron: every={every!r} must divide a minute, "
        "an hour or a day in whole seconds, minutes or hours (e.g. 5, 30, 60, 300, 3600)"
    )


def _reason(statuses: set[str]) -> str:
    """Why a ``dedup_scope="running"`` enqueue was skipped, from the statuses of the key."""
    return "in_flight" if "todo" not in statuses and "doing" in statuses else "deduplicated"


class _Backoff(BaseRetryStrategy):
    """Retry ``retries`` times, ``backoff * 2**n`` seconds apart, capped at ``max_backoff``."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def get_retry_decision(
        self, *, exception: BaseException, job: pjobs.Job
    ) -> RetryDecision | None:
        if job.attempts >= self.spec.retries:
            return None
        delay = self.spec.retry_delay(job.attempts + 1)
        return RetryDecision(retry_at=datetime.now(UTC) + timedelta(seconds=delay))


class ProcrastinateJobQueue(JobQueue):
    """The distributed :class:`~freshkeep.jobs.JobQueue` on procrastinate (see the module
    docstring for the mapping). ``url`` is the PostgreSQL database (a SQLAlchemy or libpq URL);
    apply procrastinate's schema once with :meth:`apply_schema`. :meth:`start` runs a
    procrastinate worker (``concurrency`` jobs at once) in this process; several processes
    share the queue. ``lease``: seconds without a worker heartbeat before its jobs are
    stalled; ``shutdown_timeout``: seconds :meth:`aclose` waits for running jobs.
    """

    backend = "procrastinate"
    reserved_tasks = frozenset({STALLED_TASK})

    def __init__(
        self,
        url: str,
        *,
        concurrency: int = 4,
        poll_interval: float = 0.5,
        lease: float = 30.0,
        shutdown_timeout: float = 10.0,
        stalled_check_every: float = 60.0,
        worker_id: str | None = None,
    ) -> None:
        super().__init__()
        if concurrency < 1 or poll_interval <= 0 or lease <= 0:
            raise ConfigurationError("need concurrency >= 1, poll_interval > 0 and lease > 0")
        self.url = url
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease = lease
        self.shutdown_timeout = shutdown_timeout
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        connector = procrastinate.PsycopgConnector(
            conninfo=conninfo(url), min_size=1, max_size=max(4, concurrency + 2)
        )
        self.app = procrastinate.App(connector=connector)
        self._opened = False
        self._worker: asyncio.Task[None] | None = None
        self._register_stalled_task(stalled_check_every)

    # -- registration ----------------------------------------------------------------------

    def _register_task(self, spec: TaskSpec) -> None:
        """A procrastinate task that runs ``spec`` (retried with the port's backoff)."""

        async def run(
            context: procrastinate.JobContext,
            args: dict[str, Any] | None = None,
            timestamp: int | None = None,
        ) -> None:
            await self._run(spec, context, args or {}, timestamp)

        self.app.task(
            name=spec.name,
            queue=QUEUE,
            pass_context=True,
            retry=_Backoff(spec) if spec.retries else False,
        )(run)

    def _register_periodic(self, spec: TaskSpec, periodic: PeriodicSpec) -> None:
        """A procrastinate periodic task on a cron step (see :func:`cron_for`)."""
        cron = cron_for(periodic.every)
        kwargs: dict[str, Any] = {"task_kwargs": {"args": dict(periodic.args)}}
        lock = spec.lock_for(dict(periodic.args))
        if lock is not None:
            kwargs["lock"] = lock
        self.app.periodic(cron=cron, periodic_id=f"freshkeep:{spec.name}", **kwargs)(
            self.app.tasks[spec.name]
        )

    def _register_stalled_task(self, every: float) -> None:
        async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
            await self.retry_stalled()

        task = self.app.task(
            name=STALLED_TASK, queue=QUEUE, pass_context=True, queueing_lock=STALLED_TASK
        )(retry_stalled_jobs)
        self.app.periodic(cron=cron_for(every), periodic_id=STALLED_TASK)(task)

    # -- schema and connection -------------------------------------------------------------

    async def open(self) -> None:
        """Open the connection pool (done by :meth:`start` and on first use)."""
        if not self._opened:
            await self.app.open_async()
            self._opened = True

    async def apply_schema(self) -> None:
        """Create procrastinate's tables and functions in the database (once per database)."""
        await self.open()
        await self.app.schema_manager.apply_schema_async()

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        dedup_key: str | None = None,
        dedup_scope: DedupScope = "queued",
        delay: float = 0.0,
        connection: Any = None,
    ) -> EnqueueResult:
        """Add a job (see :meth:`freshkeep.jobs.JobQueue.enqueue`). ``connection``: an
        SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on this queue's database, in a
        transaction; the job is inserted in it, in a savepoint."""
        _, data, lock = self._prepare(task, args, dedup_key, dedup_scope, delay)
        try:
            encoded = orjson.dumps({"args": data}).decode()
        except TypeError as exc:
            raise EncodeError(
                f"the arguments of a {task!r} job are not JSON-encodable: {exc}"
            ) from exc
        params = {
            "queue": QUEUE,
            "task": task,
            "lock": lock or dedup_key,
            "qlock": dedup_key,
            "args": encoded,
            "delay": float(delay),
            "inflight": dedup_key if dedup_scope == "running" else None,
        }
        try:
            if connection is None:
                job_id, reason = await self._defer_pool(params)
            else:
                job_id, reason = await self._defer_sqlalchemy(connection, params)
        except (pe.ProcrastinateException, OSError) as exc:
            raise JobQueueError(f"could not enqueue a {task!r} job: {exc}") from exc
        result = (
            EnqueueResult(str(job_id), True)
            if job_id is not None
            else EnqueueResult(None, False, reason)
        )
        self._count_enqueue(result)
        return result

    async def _defer_pool(self, params: dict[str, Any]) -> tuple[int | None, str]:
        await self.open()
        try:
            rows = await self.app.connector.execute_query_all_async(_PSYCOPG_DEFER, **params)
        except pe.UniqueViolation as exc:
            if exc.constraint_name == _QUEUEING_LOCK_INDEX:
                return None, "deduplicated"
            raise
        if rows:
            return int(rows[0]["id"]), ""
        if params["inflight"] is None:
            return None, "deduplicated"
        rows = await self.app.connector.execute_query_all_async(_STATUS_SQL, key=params["inflight"])
        return None, _reason({r["status"] for r in rows})

    async def _defer_sqlalchemy(
        self, connection: Any, params: dict[str, Any]
    ) -> tuple[int | None, str]:
        try:
            from sqlalchemy import text
            from sqlalchemy.exc import IntegrityError
            from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
        except ImportError as exc:  # pragma: no cover - a caller's SQLAlchemy connection
            raise missing_extra("sqlalchemy", "sqlalchemy") from exc
        if not isinstance(connection, AsyncSession | AsyncConnection):
            raise ConfigurationError(
                "enqueue(connection=...) takes an SQLAlchemy AsyncConnection or AsyncSession, "
                f"not {type(connection).__name__}"
            )
        if isinstance(connection, AsyncConnection) and not connection.in_transaction():
            raise ConfigurationError(
                "enqueue(connection=...) needs a connection in a transaction "
                "(async with conn.begin(): ...)"
            )
        dialect = (
            connection.get_bind().dialect.name
            if isinstance(connection, AsyncSession)
            else connection.dialect.name
        )
        if dialect != "postgresql":
            raise ConfigurationError(
                f"enqueue(connection=...) is on {dialect}: procrastinate needs a connection to "
                "its PostgreSQL database"
            )
        try:
            async with connection.begin_nested():
                rows = (await connection.execute(text(_SQLALCHEMY_DEFER), params)).all()
        except IntegrityError as exc:
            if _QUEUEING_LOCK_INDEX in str(exc):
                return None, "deduplicated"
            raise JobQueueError(f"could not enqueue a {params['task']!r} job: {exc}") from exc
        if rows:
            return int(rows[0][0]), ""
        if params["inflight"] is None:
            return None, "deduplicated"
        result = await connection.execute(
            text(_STATUS_SQL.replace("%(key)s", ":key")), {"key": params["inflight"]}
        )
        return None, _reason(set(result.scalars()))

    # -- running ---------------------------------------------------------------------------

    async def _run(
        self,
        spec: TaskSpec,
        context: procrastinate.JobContext,
        args: dict[str, Any],
        timestamp: int | None,
    ) -> None:
        job = context.job
        periodic = self._periodic.get(spec.name)
        if timestamp is not None and periodic is not None:
            late = time.time() - timestamp
            if late > periodic.grace:
                self._skips["misfire"] += 1
                log.warning(
                    "periodic %s: tick %s started %.1fs late, skipped", spec.name, timestamp, late
                )
                return
        attempt = job.attempts + 1
        try:
            with job_span(spec.name, str(job.id), attempt):
                await spec.func(JobContext(str(job.id), spec.name, attempt), args)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._count_failure(spec.name, error, final=attempt > spec.retries)
            raise
        self._stats["done"] += 1

    async def retry_stalled(self) -> int:
        """Put back to waiting the running jobs of workers without a heartbeat for ``lease``
        seconds (the ``freshkeep.retry_stalled_jobs`` periodic task calls this). Returns how
        many."""
        await self.open()
        stalled = await self.app.job_manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=self.lease
        )
        n = 0
        for job in stalled:
            await self.app.job_manager.retry_job(job)
            n += 1
        if n:
            self._stats["stalled"] += n
            log.warning("put %d stalled job(s) back to waiting", n)
        return n

    async def start(self) -> None:
        """Run a procrastinate worker (and its periodic deferrer) in a background task."""
        if self._worker is not None:
            return
        await self.open()
        self._worker = asyncio.get_running_loop().create_task(
            self._run_worker(wait=True), name="freshkeep-procrastinate-worker"
        )

    async def _run_worker(self, *, wait: bool) -> None:
        max_delay = max([p.grace for p in self._periodic.values()] or [0.0])
        self.app.periodic_defaults = {"max_delay": max(max_delay, 1.0)}
        await self.app.run_worker_async(
            queues=[QUEUE],
            wait=wait,
            concurrency=self.concurrency,
            name=self.worker_id,
            install_signal_handlers=False,
            fetch_job_polling_interval=self.poll_interval,
            abort_job_polling_interval=max(self.poll_interval, 1.0),
            update_heartbeat_interval=self.lease / 3,
            stalled_worker_timeout=self.lease,
            shutdown_graceful_timeout=self.shutdown_timeout,
        )

    async def counts(self) -> dict[str, int]:
        """Jobs of this queue's tasks: ``ready`` (due), ``queued`` (waiting) and ``running``."""
        await self.open()
        row = await self.app.connector.execute_query_one_async(
            _COUNTS_SQL, queue=QUEUE, tasks=sorted(self._tasks)
        )
        counts = {k: int(row[k]) for k in ("ready", "queued", "running")}
        self._counts = {"queued": counts["queued"], "running": counts["running"]}
        return counts

    async def waiting(self, task: str) -> int:
        """How many jobs of ``task`` wait to run (due or delayed), on every instance."""
        await self.open()
        row = await self.app.connector.execute_query_one_async(_WAITING_SQL, queue=QUEUE, task=task)
        return int(row["n"])

    async def drain(self, timeout: float = 30.0) -> None:
        """Run jobs until none of this queue's tasks is ready or running. Without
        :meth:`start`, runs a worker until the queue is caught up. Raises
        :class:`JobQueueTimeout` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            counts = await self.counts()
            if counts["ready"] == 0 and counts["running"] == 0:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise JobQueueTimeout(
                    f"jobs still pending after {timeout}s: {counts['ready']} ready, "
                    f"{counts['running']} running"
                )
            if self._worker is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._run_worker(wait=False)
            else:
                await asyncio.sleep(min(self.poll_interval, remaining))

    async def aclose(self) -> None:
        """Stop the worker (running jobs get ``shutdown_timeout`` seconds to end) and close
        the pool."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        if self._opened:
            await self.app.close_async()
            self._opened = False

    async def __aenter__(self) -> ProcrastinateJobQueue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def snapshot(self) -> JobQueueSnapshot:
        """Counters of this process, and queued/running counts as of the last :meth:`counts`
        or :meth:`drain`."""
        return JobQueueSnapshot(**self._snapshot_fields(), worker=self.worker_id)


__all__ = ["QUEUE", "STALLED_TASK", "ProcrastinateJobQueue", "conninfo", "cron_for"]
