"""Building the configured job queue, and scheduling processors through it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.exceptions import ConfigurationError, ProcessorBusy
from freshkeep.jobs._types import JobContext, JobQueue

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from freshkeep.processing import Pipeline
    from freshkeep.settings import Settings

log = logging.getLogger("freshkeep.jobs")


def job_queue_from_settings(
    settings: Settings | None = None,
    *,
    engine: AsyncEngine | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> JobQueue:
    """The job queue ``settings`` configure (``FRESHKEEP_JOBS_*``; default: read from the
    environment).

    The database is ``jobs_url`` when it is set, else ``engine``'s (e.g. the application's
    engine: jobs can then be enqueued in the application's transactions), else
    ``database_url``.

    - ``jobs_backend="sql"``: a :class:`~freshkeep.jobs.SQLJobQueue`; the table is created
      on start if missing.
    - ``jobs_backend="procrastinate"``: a :class:`~freshkeep.jobs.ProcrastinateJobQueue`
      (PostgreSQL); apply its schema once with
      :meth:`~freshkeep.jobs.ProcrastinateJobQueue.apply_schema` or ``freshkeep jobs schema``.
    """
    if settings is None:
        from freshkeep.settings import Settings

        settings = Settings.load()
    url = settings.jobs_url or settings.database_url
    if settings.jobs_backend == "sql":
        from freshkeep.jobs._sql import SQLJobQueue

        options: dict[str, Any] = {
            "clock": clock,
            "concurrency": settings.jobs_concurrency,
            "poll_interval": settings.jobs_poll_interval,
            "lease": settings.jobs_lease,
            "keep_finished": settings.jobs_keep_finished,
            "shutdown_grace": settings.jobs_shutdown_grace,
            "create_tables": True,
        }
        if engine is not None and settings.jobs_url is None:
            return SQLJobQueue(engine, **options)
        return SQLJobQueue.from_url(url, **options)
    if settings.jobs_backend == "procrastinate":
        from freshkeep.jobs.procrastinate import ProcrastinateJobQueue

        if settings.jobs_url is None and engine is not None:  # the application's database
            url = engine.url.render_as_string(hide_password=False)
        return ProcrastinateJobQueue(
            url,
            concurrency=settings.jobs_concurrency,
            poll_interval=settings.jobs_poll_interval,
            lease=settings.jobs_lease,
        )
    raise ConfigurationError(f"unknown jobs backend {settings.jobs_backend!r}")


def schedule_processor(
    queue: JobQueue,
    pipeline: Pipeline,
    name: str,
    *,
    every: float,
    misfire_grace: float | None = None,
    retries: int = 0,
) -> str:
    """Run processor ``name`` of ``pipeline`` every ``every`` seconds through ``queue``.

    Registers the task ``processor:<name>`` (a job calls ``pipeline.run(name)``; one runs at a
    time, its lock is the processor's name) and makes it periodic, so with several instances
    each tick runs once. A tick that finds the processor busy (a run started by hand, or by
    another instance's pipeline lock) ends without error. Returns the task name; enqueue it to
    run the processor now.
    """
    task = f"processor:{name}"
    pipeline.get(name)  # UnknownProcessorError early

    async def run_processor(ctx: JobContext, args: dict[str, Any]) -> None:
        try:
            stats = await pipeline.run(name)
        except ProcessorBusy:
            log.info("processor %s is running already; tick %s skipped", name, ctx.job_id)
            return
        log.debug("processor %s ran as job %s: %s", name, ctx.job_id, stats)

    queue.task(task, run_processor, retries=retries, lock=lambda _args: task)
    queue.periodic(task, every, misfire_grace=misfire_grace)
    return task


__all__ = ["job_queue_from_settings", "schedule_processor"]
