"""``freshkeep jobs``: the job queue from the command line (needs ``freshkeep[cli]``).

- ``freshkeep jobs status``: jobs by task and status;
- ``freshkeep jobs schema``: create the job table (``sql``) or procrastinate's schema;
- ``freshkeep jobs worker --app module:attr``: run the workers of your queue (a ``JobQueue``
  with its tasks registered, or a function returning one) until interrupted.

The backend and database come from ``FRESHKEEP_JOBS_*`` / ``FRESHKEEP_DATABASE_URL``;
``--db`` overrides the URL. ``freshkeep --app module:attr jobs …`` (or ``FRESHKEEP_APP``) works
on the job queues of your application instead (found by ``freshkeep.integrations.app``; the
root command hands them over through :data:`APP_QUEUES`, so this module imports no
integration).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Protocol

from freshkeep.exceptions import FreshkeepError, missing_extra

try:
    import typer
    from rich.console import Console
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("cli", exc.name or "typer") from exc

from freshkeep.cli._help import HelpGroup

APP_QUEUES = "freshkeep.app.queues"
"""The key, in the click context's ``meta``, of the ``--app`` opener set by the root command:
a function returning an async context manager of an object with ``job_queues``."""


class _WithQueues(Protocol):
    @property
    def job_queues(self) -> Sequence[Any]: ...


AppQueues = Callable[[], AbstractAsyncContextManager[_WithQueues]]

app = typer.Typer(
    cls=HelpGroup,
    name="jobs",
    help="The job queue: status, schema, workers.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (or SQLite file) of the queue. Default: $FRESHKEEP_JOBS_URL, "
        "else $FRESHKEEP_DATABASE_URL.",
        show_default=False,
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(db: str | None) -> Any:
    from freshkeep.settings import Settings

    settings = Settings.load()
    if db is not None:
        settings = settings.model_copy(update={"jobs_url": db})
    return settings


def _app_queues(ctx: typer.Context) -> AppQueues | None:
    opener = ctx.meta.get(APP_QUEUES)
    return opener if callable(opener) else None


async def _rows_of(queue: Any) -> list[tuple[str, str, int]]:
    """Jobs by task and status, from the queue's own table."""
    from freshkeep.jobs._sql import SQLJobQueue, jobs_table

    if isinstance(queue, SQLJobQueue):
        from sqlalchemy import func, select

        await queue.create_tables()
        c = jobs_table.c
        async with queue.engine.connect() as conn:
            result = await conn.execute(
                select(c.task, c.status, func.count())
                .group_by(c.task, c.status)
                .order_by(c.task, c.status)
            )
            return [(task, status, int(n)) for task, status, n in result]
    from freshkeep.jobs.procrastinate import ProcrastinateJobQueue

    if not isinstance(queue, ProcrastinateJobQueue):
        raise FreshkeepError(f"cannot list the jobs of a {type(queue).__name__}")
    await queue.open()
    rows = await queue.app.connector.execute_query_all_async(
        "SELECT task_name, status::text AS status, count(*) AS n "
        "FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return [(r["task_name"], r["status"], int(r["n"])) for r in rows]


async def _status(settings: Any) -> list[tuple[str, str, int]]:
    from freshkeep.jobs import job_queue_from_settings
    from freshkeep.sql.engine import require_existing

    if settings.jobs_backend == "sql":
        require_existing(settings.jobs_url or settings.database_url)

    queue = job_queue_from_settings(settings)
    try:
        return await _rows_of(queue)
    finally:
        await queue.aclose()


async def _app_status(opener: AppQueues) -> list[tuple[str, str, int]]:
    async with opener() as found:
        if not found.job_queues:
            raise FreshkeepError("--app has no job queue")
        rows: list[tuple[str, str, int]] = []
        for queue in found.job_queues:
            rows.extend(await _rows_of(queue))
        return rows


@app.command()
def status(ctx: typer.Context, db: DbOption = None) -> None:
    """Show the jobs in the queue, by task and status (with --app: of your app's queues)."""
    opener = _app_queues(ctx)
    try:
        if opener is not None and db is None:
            title = "jobs (--app)"
            rows = asyncio.run(_app_status(opener))
        else:
            settings = _settings(db)
            title = f"jobs ({settings.jobs_backend})"
            rows = asyncio.run(_status(settings))
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title=title)
    table.add_column("task")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for task, state, n in rows:
        table.add_row(task, state, str(n))
    if not rows:
        console.print("no jobs", highlight=False)
        return
    console.print(table)


async def _schema_of(queue: Any) -> None:
    from freshkeep.jobs._sql import SQLJobQueue

    if isinstance(queue, SQLJobQueue):
        await queue.create_tables()
        return
    from freshkeep.jobs.procrastinate import ProcrastinateJobQueue

    if not isinstance(queue, ProcrastinateJobQueue):
        raise FreshkeepError(f"cannot create the schema of a {type(queue).__name__}")
    await queue.apply_schema()


async def _schema(settings: Any) -> None:
    from freshkeep.jobs import job_queue_from_settings

    queue = job_queue_from_settings(settings)
    try:
        await _schema_of(queue)
    finally:
        await queue.aclose()


async def _app_schema(opener: AppQueues) -> list[str]:
    async with opener() as found:
        if not found.job_queues:
            raise FreshkeepError("--app has no job queue")
        for queue in found.job_queues:
            await _schema_of(queue)
        return [str(getattr(q, "backend", type(q).__name__)) for q in found.job_queues]


@app.command()
def schema(ctx: typer.Context, db: DbOption = None) -> None:
    """Create the queue's tables: freshkeep_jobs (sql) or procrastinate's schema."""
    opener = _app_queues(ctx)
    try:
        if opener is not None and db is None:
            what = ", ".join(asyncio.run(_app_schema(opener)))
        else:
            settings = _settings(db)
            asyncio.run(_schema(settings))
            what = settings.jobs_backend
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:  # a schema that exists already, a server that refuses
        raise _fail(f"{type(exc).__name__}: {exc}") from exc
    console.print(f"schema ready ({what})", highlight=False)


def load_queue(spec: str) -> Any:
    """The queue at ``module:attribute`` (a ``JobQueue``, or a callable returning one)."""
    from freshkeep.exceptions import ConfigurationError
    from freshkeep.jobs import JobQueue

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"--app must look like module:attribute, not {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}") from exc
    if not isinstance(obj, JobQueue) and callable(obj):
        obj = obj()
    if not isinstance(obj, JobQueue):
        raise ConfigurationError(f"{spec!r} is not a JobQueue: {type(obj).__name__}")
    return obj


async def _work(queues: Sequence[Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for queue in queues:
            await queue.start()
        await stop.wait()
    finally:
        for queue in queues:
            await queue.aclose()


async def _app_work(opener: AppQueues) -> list[Any]:
    async with opener() as found:
        queues = list(found.job_queues)
        if not queues:
            raise FreshkeepError("--app has no job queue")
        for queue in queues:
            _started(queue)
        await _work(queues)
        return queues


def _started(queue: Any) -> None:
    console.print(
        f"worker on {queue.backend}: tasks {', '.join(queue.snapshot().tasks)}",
        highlight=False,
    )


@app.command()
def worker(
    ctx: typer.Context,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="module:attribute of your JobQueue (or of a function returning it). Default: "
            "the job queues of `freshkeep --app`.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the workers (and periodic ticks) of your queue until Ctrl-C or SIGTERM."""
    opener = _app_queues(ctx)
    try:
        if app_spec is not None:
            queues = [load_queue(app_spec)]
            _started(queues[0])
            asyncio.run(_work(queues))
        elif opener is not None:
            queues = asyncio.run(_app_work(opener))
        else:
            raise _fail("give your queue: freshkeep jobs worker --app module:attribute")
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    for queue in queues:
        stats = queue.snapshot()
        console.print(
            f"stopped: {stats.done} done, {stats.failed} failed, {stats.retried} retried",
            highlight=False,
        )


__all__ = ["APP_QUEUES", "app", "load_queue"]
