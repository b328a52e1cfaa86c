"""``freshkeep jobs``: the job queue from the command line (needs ``freshkeep[cli]``).

- ``freshkeep jobs status``: jobs by task and status;
- ``freshkeep jobs schema``: create the job table (``sql``) or procrastinate's schema;
- ``freshkeep jobs worker --app module:attr``: run the workers of your queue (a ``JobQueue``
  with its tasks registered, or a function returning one) until interrupted.

The backend and database come from ``FRESHKEEP_JOBS_*`` / ``FRESHKEEP_DATABASE_URL``;
``--db`` overrides the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from typing import Annotated, Any

from freshkeep.exceptions import FreshkeepError, missing_extra

try:
    import typer
    from rich.console import Console
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("cli", exc.name or "typer") from exc

app = typer.Typer(name="jobs", help="The job queue: status, schema, workers.", no_args_is_help=True)
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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _settings(db: str | None) -> Any:
    from freshkeep.settings import Settings

    settings = Settings.load()
    if db is not None:
        settings = settings.model_copy(update={"jobs_url": db})
    return settings


async def _status(settings: Any) -> list[tuple[str, str, int]]:
    from freshkeep.jobs import job_queue_from_settings

    queue = job_queue_from_settings(settings)
    try:
        if settings.jobs_backend == "procrastinate":
            from freshkeep.jobs.procrastinate import ProcrastinateJobQueue

            assert isinstance(queue, ProcrastinateJobQueue)
            await queue.open()
            rows = await queue.app.connector.execute_query_all_async(
                "SELECT task_name, status::text AS status, count(*) AS n "
                "FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2"
            )
            return [(r["task_name"], r["status"], int(r["n"])) for r in rows]
        from sqlalchemy import func, select

        from freshkeep.jobs._sql import SQLJobQueue, jobs_table

        assert isinstance(queue, SQLJobQueue)
        await queue.create_tables()
        c = jobs_table.c
        async with queue.engine.connect() as conn:
            result = await conn.execute(
                select(c.task, c.status, func.count())
                .group_by(c.task, c.status)
                .order_by(c.task, c.status)
            )
            return [(task, status, int(n)) for task, status, n in result]
    finally:
        await queue.aclose()


@app.command()
def status(db: DbOption = None) -> None:
    """Show the jobs in the queue, by task and status."""
    try:
        settings = _settings(db)
        rows = asyncio.run(_status(settings))
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title=f"jobs ({settings.jobs_backend})")
    table.add_column("task")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for task, state, n in rows:
        table.add_row(task, state, str(n))
    if not rows:
        console.print("no jobs", highlight=False)
        return
    console.print(table)


async def _schema(settings: Any) -> None:
    from freshkeep.jobs import job_queue_from_settings

    queue = job_queue_from_settings(settings)
    try:
        if settings.jobs_backend == "procrastinate":
            from freshkeep.jobs.procrastinate import ProcrastinateJobQueue

            assert isinstance(queue, ProcrastinateJobQueue)
            await queue.apply_schema()
        else:
            from freshkeep.jobs._sql import SQLJobQueue

            assert isinstance(queue, SQLJobQueue)
            await queue.create_tables()
    finally:
        await queue.aclose()


@app.command()
def schema(db: DbOption = None) -> None:
    """Create the queue's tables: freshkeep_jobs (sql) or procrastinate's schema."""
    try:
        settings = _settings(db)
        asyncio.run(_schema(settings))
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:  # a schema that exists already, a server that refuses
        raise _fail(f"{type(exc).__name__}: {exc}") from exc
    console.print(f"schema ready ({settings.jobs_backend})", highlight=False)


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


async def _work(queue: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await queue.start()
    try:
        await stop.wait()
    finally:
        await queue.aclose()


@app.command()
def worker(
    app_spec: Annotated[
        str,
        typer.Option(
            "--app", help="module:attribute of your JobQueue (or of a function returning it)."
        ),
    ],
) -> None:
    """Run the workers (and periodic ticks) of your queue until Ctrl-C or SIGTERM."""
    try:
        queue = load_queue(app_spec)
        console.print(
            f"worker on {queue.backend}: tasks {', '.join(queue.snapshot().tasks)}",
            highlight=False,
        )
        asyncio.run(_work(queue))
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    stats = queue.snapshot()
    console.print(
        f"stopped: {stats.done} done, {stats.failed} failed, {stats.retried} retried",
        highlight=False,
    )


__all__ = ["app", "load_queue"]
