"""The ``freshkeep`` command line (typer + rich): ``demo``, ``bench``, ``migrate``, ``process``,
``gc``, ``health``, ``jobs``, ``version``.

``freshkeep --app module:attribute …`` (or ``FRESHKEEP_APP``) points ``process``, ``gc``,
``health`` and ``jobs`` at your application (see :mod:`freshkeep.integrations.app`); without it
they work on the demo hub's database (``--db``).

``freshkeep demo`` serves the reference hub (:mod:`freshkeep.demo`) with uvicorn. Its database
is ``--db`` (an async SQLAlchemy URL or a SQLite file path), else ``FRESHKEEP_DATABASE_URL``,
else ``freshkeep-demo.db`` in the current directory. ``freshkeep bench`` runs the benchmarks of
:mod:`freshkeep.bench` with a progress bar and prints their report.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
import sys
import tempfile
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from freshkeep.exceptions import (
    ConfigurationError,
    FreshkeepError,
    MissingDependencyError,
    missing_extra,
)

try:
    import typer
    from rich.console import Console, Group
    from rich.logging import RichHandler
    from rich.markdown import Markdown
    from rich.panel import Panel
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("cli", exc.name or "typer") from exc

if TYPE_CHECKING:
    from freshkeep.processing import Pipeline

DEFAULT_SEED_TASKS = 10_000
"""The default of ``--seed-tasks`` (the same as :data:`freshkeep.demo.DEFAULT_SEED_TASKS`)."""

app = typer.Typer(
    name="freshkeep",
    help="freshkeep: keep derived data fresh, and know when it is not.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


APP_META = "freshkeep.app"
"""The key of ``--app`` in the click context's ``meta`` (shared with subcommands)."""


@app.callback()
def main_options(
    ctx: typer.Context,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar="FRESHKEEP_APP",
            metavar="MODULE:ATTR",
            help="Your application: a Keeper, an object holding one (or its pipelines, artifact "
            "caches, job queues), or a function returning one. process, gc, health and jobs "
            "then work on it; without it, on the demo hub's database.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """freshkeep: keep derived data fresh, and know when it is not."""
    ctx.meta[APP_META] = app_spec or None
    if app_spec:
        from freshkeep.jobs.cli import APP_QUEUES

        def queues() -> AbstractAsyncContextManager[Any]:
            from freshkeep.integrations.app import open_app

            return open_app(app_spec)

        ctx.meta[APP_QUEUES] = queues  # `freshkeep jobs` may not import this layer


def _app_spec(ctx: typer.Context) -> str | None:
    spec = ctx.meta.get(APP_META)
    return spec if isinstance(spec, str) else None


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH_OR_URL",
            help="SQLite file path or async SQLAlchemy URL (e.g. postgresql+asyncpg://u@h/db). "
            "Default: $FRESHKEEP_DATABASE_URL, else freshkeep-demo.db.",
            show_default=False,
        ),
    ] = None,
    seed_tasks: Annotated[
        int,
        typer.Option(
            min=0, help="Tasks to seed into an empty database (0: none). Data is never re-seeded."
        ),
    ] = DEFAULT_SEED_TASKS,
    log_level: Annotated[
        str, typer.Option(help="Log level of the server and of freshkeep.")
    ] = "info",
) -> None:
    """Serve the reference hub: a REST API and its cached GET /state/summary."""
    try:
        import uvicorn

        from freshkeep.demo.api import ENDPOINTS
        from freshkeep.demo.app import create_app
        from freshkeep.demo.hub import check_database, normalize_url
        from freshkeep.demo.settings import HubSettings
        from freshkeep.sql.engine import display_url
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except ImportError as exc:
        raise _fail(str(missing_extra("demo", exc.name or "uvicorn"))) from exc
    level = log_level.upper()
    if level not in logging.getLevelNamesMapping():
        raise _fail(f"unknown log level {log_level!r}")
    try:
        settings = HubSettings.load()
        token = None
        if settings.admin_token is None:  # like Jupyter: a token for this run, printed below
            from pydantic import SecretStr

            token = secrets.token_urlsafe(24)
            settings = settings.model_copy(update={"admin_token": SecretStr(token)})
        url = normalize_url(db if db is not None else settings.database_url)
        hub_app = create_app(url, seed_tasks=seed_tasks, settings=settings)
        asyncio.run(check_database(url))  # a clear message now, not a traceback from uvicorn
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc

    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    log = logging.getLogger("freshkeep")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False

    base = f"http://{host}:{port}"
    seed = f"{seed_tasks:,} tasks, if the database is empty" if seed_tasks else "none"
    about = Table.grid(padding=(0, 2))
    about.add_row("[bold]url[/]", f"[link={base}]{base}[/]")
    about.add_row("[bold]database[/]", display_url(url))
    about.add_row("[bold]seed[/]", seed)
    board = f"{base}/freshkeep?token=" + (token or "$FRESHKEEP_ADMIN_TOKEN")
    endpoints = Table.grid(padding=(0, 2))
    for method, path, what in ENDPOINTS:
        endpoints.add_row(f"[cyan]{method}[/]", path, f"[dim]{what}[/]")
    console.print(
        Panel(
            Group(about, "", endpoints),
            title="[bold]freshkeep demo hub[/]",
            subtitle="Ctrl+C stops",
            title_align="left",
            subtitle_align="right",
            border_style="green",
            expand=False,
        ),
        highlight=False,
    )
    # On a line of its own, never wrapped, so that it can be copied or clicked.
    console.print(f"dashboard: {board}", soft_wrap=True, highlight=False, markup=False)
    uvicorn.run(hub_app, host=host, port=port, log_level=log_level.lower(), lifespan="on")


@app.command()
def migrate(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH_OR_URL",
            help="SQLAlchemy URL (sync or async driver) or SQLite file path. "
            "Default: $FRESHKEEP_DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
    revision: Annotated[
        str, typer.Option(help="Alembic revision of freshkeep's tables to upgrade to.")
    ] = "head",
    triggers: Annotated[
        list[str] | None,
        typer.Option(
            "--triggers",
            metavar="TABLE",
            help="PostgreSQL: install the change-capture trigger on TABLE (repeat, or "
            "comma-separate). Raw SQL writes to it then bump its revision.",
            show_default=False,
        ),
    ] = None,
    remove_triggers: Annotated[
        list[str] | None,
        typer.Option(
            "--remove-triggers",
            metavar="TABLE",
            help="PostgreSQL: drop the change-capture trigger of TABLE.",
            show_default=False,
        ),
    ] = None,
    channel: Annotated[
        str, typer.Option(help="NOTIFY channel of the triggers (the PostgreSQL bus's channel).")
    ] = "freshkeep",
) -> None:
    """Create or upgrade freshkeep's own tables (idempotent); optionally install triggers."""
    try:
        from freshkeep.settings import Settings
        from freshkeep.sql import migrate as migrations
        from freshkeep.sql import triggers as capture
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc

    def split(values: list[str] | None) -> list[str]:
        return [t.strip() for v in values or () for t in v.split(",") if t.strip()]

    try:
        url = migrations.normalize_url(db if db is not None else Settings.load().database_url)
        result = migrations.upgrade(url, revision)
        if result.changed:
            for step in result.applied:
                console.print(f"applied {step}", highlight=False)
            console.print(f"freshkeep tables at revision {result.after}", highlight=False)
        else:
            console.print(f"already up to date (revision {result.after})", highlight=False)
        if add := split(triggers):
            done = capture.install_triggers(url, add, channel=channel)
            console.print(f"triggers installed on: {', '.join(done)}", highlight=False)
        if drop := split(remove_triggers):
            done = capture.remove_triggers(url, drop)
            console.print(f"triggers removed from: {', '.join(done)}", highlight=False)
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:  # a driver's error: a message, not a traceback
        raise _fail(f"{type(exc).__name__}: {exc}", 1) from exc


class _RichReporter:
    """Shows the benchmark's progress as a rich progress bar (one task per stage)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.total = 0.0

    def stage(self, name: str, total: float) -> None:
        """Complete the previous stage's bar and start one for this stage."""
        if self.task is not None:
            self.progress.update(self.task, completed=self.total)
        self.task, self.total = self.progress.add_task(name, total=total), total

    def advance(self, amount: float = 1.0) -> None:
        """Advance the current stage's bar."""
        if self.task is not None:
            self.progress.advance(self.task, amount)

    def note(self, text: str) -> None:
        """Print a note above the bars."""
        self.progress.console.print(f"[yellow]note:[/] {text}", highlight=False)


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="A smoke run (small hub, ~3 s per mode): < 2 min.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for results.md/.json/.png. Default: benchmarks/results, or a "
            "temporary directory with --quick.",
            show_default=False,
        ),
    ] = None,
    level: Annotated[
        list[str] | None,
        typer.Option(
            help="library, service and/or distributed (repeat; default: library and service; "
            "distributed needs PostgreSQL and Redis).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="Service modes to run (repeat; default: all): floor, freshkeep, "
            "freshkeep-fastapi, ttl, maxprobe, uncached.",
            show_default=False,
        ),
    ] = None,
    seed_tasks: Annotated[
        int | None, typer.Option(min=0, help="Tasks in the benchmark's hub.", show_default=False)
    ] = None,
    read_seconds: Annotated[
        float | None,
        typer.Option(min=0.1, help="Read phase per mode (s).", show_default=False),
    ] = None,
    write_seconds: Annotated[
        float | None,
        typer.Option(min=0.1, help="Write phase per mode (s).", show_default=False),
    ] = None,
    write_rate: Annotated[
        float | None,
        typer.Option(min=0.1, help="Writes per second in the write phase.", show_default=False),
    ] = None,
    connections: Annotated[
        int | None,
        typer.Option(min=1, help="Keep-alive connections of the load.", show_default=False),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(min=1, help="Rounds of the library level's hits.", show_default=False),
    ] = None,
    chart: Annotated[bool, typer.Option(help="Draw results.png (needs matplotlib).")] = True,
) -> None:
    """Measure what freshkeep costs against a dict, an await, peer caches, a fixed TTL, a
    MAX(updated_at) probe and no cache; write results.md, results.json and results.png."""
    try:
        from freshkeep import bench as fkbench
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except ImportError as exc:
        raise _fail(str(missing_extra("bench", exc.name or "uvicorn"))) from exc
    config = fkbench.quick() if quick else fkbench.full()
    levels = tuple(level) if level else config.levels
    if unknown := set(levels) - {"library", "service", "distributed"}:
        raise _fail(f"unknown level(s): {', '.join(sorted(unknown))}")
    modes = tuple(mode) if mode else config.service.modes
    if unknown := set(modes) - set(fkbench.MODE_NAMES):
        raise _fail(f"unknown mode(s): {', '.join(sorted(unknown))}")
    config.levels, config.service.modes, config.chart = levels, modes, chart
    if seed_tasks is not None:
        config.library.seed_tasks = config.service.seed_tasks = seed_tasks
        config.distributed.seed_tasks = seed_tasks
    if read_seconds is not None:
        config.service.read_s = config.distributed.read_s = read_seconds
    if write_seconds is not None:
        config.service.write_s = write_seconds
    if write_rate is not None:
        config.service.write_rate = write_rate
    if connections is not None:
        config.service.connections = config.distributed.connections = connections
    if rounds is not None:
        config.library.rounds = rounds
    if out is not None:
        target = out
    elif quick:  # a smoke run must not dirty a checkout
        target = Path(tempfile.mkdtemp(prefix="freshkeep-bench-"))
    else:
        target = Path("benchmarks") / "results"
    command = shlex.join(["freshkeep", "bench", *sys.argv[2:]])
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    try:
        if err_console.is_terminal:
            with Progress(*columns, console=err_console, refresh_per_second=4) as progress:
                _, paths = fkbench.run(config, target, _RichReporter(progress), command=command)
        else:  # a log (CI): one line per stage
            _, paths = fkbench.run(config, target, fkbench.PrintReporter(), command=command)
    except (RuntimeError, FreshkeepError) as exc:
        raise _fail(str(exc), 1) from exc
    console.print(Markdown(paths["markdown"].read_text()))
    for kind, path in paths.items():
        console.print(f"[bold]{kind}[/]: {path}", highlight=False)


@app.command()
def process(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="The processor to run (the demo hub's: evidence, usage).")
    ],
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH_OR_URL",
            help="The demo hub's database (SQLite file path or async SQLAlchemy URL). "
            "Default: $FRESHKEEP_DATABASE_URL. Not with --app.",
            show_default=False,
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            help="The demo hub's directory of session files. Default: $FRESHKEEP_SESSIONS_ROOT, "
            "else beside the SQLite database. Not with --app.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a processor now, with a progress bar: one of --app's pipelines, else the demo hub's."""
    spec = _app_spec(ctx)
    if spec is not None and (db is not None or root is not None):
        raise _fail("--db and --root are the demo hub's; with --app the pipelines are your app's")
    try:
        from freshkeep.exceptions import ProcessorBusy, UnknownProcessorError
        from freshkeep.processing import RunStats
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())

    async def run_on(pipeline: Pipeline) -> RunStats:
        pipeline.get(name)  # an unknown name fails before touching the database
        await _create_state_table(pipeline)
        with Progress(*columns, console=err_console, refresh_per_second=8) as progress:
            task = progress.add_task(name, total=None)

            def show(stats: RunStats) -> None:
                progress.update(
                    task,
                    description=f"{name}: scanned {stats.scanned:,}, processed "
                    f"{stats.processed:,}, failed {stats.failed:,}",
                )

            return await pipeline.run(name, progress=show)

    async def run_app(spec: str) -> RunStats:
        from freshkeep.integrations.app import open_app

        async with open_app(spec) as found:
            return await run_on(found.pipeline_of(name))

    async def run_hub() -> RunStats:
        from freshkeep.demo.hub import create_engine, normalize_url
        from freshkeep.demo.sessions import Sessions
        from freshkeep.demo.settings import HubSettings

        settings = HubSettings.load()
        if root is not None:
            settings = settings.model_copy(update={"sessions_root": str(root)})
        engine = create_engine(normalize_url(db if db is not None else settings.database_url))
        try:
            return await run_on(Sessions.create(engine, settings).pipeline)
        finally:
            await engine.dispose()

    try:
        stats = asyncio.run(run_app(spec) if spec else run_hub())
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except UnknownProcessorError as exc:
        raise _fail(str(exc)) from exc
    except ProcessorBusy as exc:
        raise _fail(f"processor {name!r} is already running", 1) from exc
    except ConfigurationError as exc:
        raise _fail(str(exc)) from exc
    except FreshkeepError as exc:
        raise _fail(str(exc), 1) from exc
    table = Table(title=f"processor {name}", show_header=False)
    for label in ("scanned", "skipped", "unchanged", "deferred", "processed", "failed", "hashed"):
        table.add_row(label, f"{getattr(stats, label):,}")
    table.add_row("duration", f"{stats.duration:.3f} s")
    console.print(table)
    for key, error in stats.errors.items():
        err_console.print(f"[yellow]failed:[/] {key}: {error}", highlight=False)
    if stats.failed:
        raise typer.Exit(1)


async def _create_state_table(pipeline: Pipeline) -> None:
    """Create the SQL processing state's table if the pipeline keeps its state in one."""
    try:
        from freshkeep.processing.sql import SQLProcessingState
    except ImportError:  # no SQLAlchemy: the state is not in a SQL table
        return
    if isinstance(pipeline.state, SQLProcessingState):
        await pipeline.state.create_table()


@app.command()
def health(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            help="Base URL of the running service. Default: $FRESHKEEP_SERVICE_URL "
            "(http://127.0.0.1:8000). With --app, the checks run here instead.",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Admin bearer token: read /health/detailed (every check). Default: "
            "$FRESHKEEP_ADMIN_TOKEN; without one, the headline of /health only.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for it.")] = 10.0,
) -> None:
    """Show a service's health; exit 0 ok, 1 degraded, 2 unhealthy or unreachable. With --app
    (and no --url), run your application's checks in this process instead."""
    import time

    from freshkeep.health import console as health_console
    from freshkeep.settings import Settings

    spec = _app_spec(ctx)
    if spec is not None and url is None:
        raise typer.Exit(_app_health(spec, as_json=as_json, timeout=timeout, now=time.time()))
    try:
        settings = Settings.load()
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    if token is None and settings.admin_token is not None:
        token = settings.admin_token.get_secret_value()
    code = health_console.run(
        url or settings.service_url,
        token,
        console=console,
        err_console=err_console,
        as_json=as_json,
        timeout=timeout,
        now=time.time(),
    )
    raise typer.Exit(code)


def _app_health(spec: str, *, as_json: bool, timeout: float, now: float) -> int:
    """Run the health checks of the application at ``spec`` here; print them; the exit code."""
    import json

    from freshkeep.health import EXIT_CODES, HealthReport
    from freshkeep.health import console as health_console
    from freshkeep.health.client import Fetched
    from freshkeep.integrations.app import open_app

    async def run() -> HealthReport:
        async with open_app(spec) as found:
            if found.health is None:
                raise ConfigurationError(
                    f"--app {spec!r} has no Keeper, so no health checks; give the object "
                    "that holds your Keeper"
                )
            found.health.configure()
            return await asyncio.wait_for(found.health.report(), timeout)

    try:
        report = asyncio.run(run())
    except (FreshkeepError, TimeoutError) as exc:
        raise _fail(str(exc) or f"the health checks took more than {timeout} s") from exc
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        fetched = Fetched(report, f"--app {spec}", detailed=True)
        health_console.render(fetched, console, now=now)
    return EXIT_CODES[report.status]


@app.command()
def gc(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH_OR_URL",
            help="The demo hub's artifact index database (async SQLAlchemy URL or SQLite file "
            "path). Default: $FRESHKEEP_DATABASE_URL. Not with --app.",
            show_default=False,
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            metavar="DIR_OR_URL",
            help="The demo hub's artifact storage. Default: $FRESHKEEP_ARTIFACT_STORAGE_URL, "
            "else the hub's (beside a SQLite database file: <file>-artifacts). Not with --app.",
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        list[str] | None,
        typer.Option(
            "--cache",
            metavar="NAME",
            help="Collect this artifact cache only (repeat). Default: every cache of --app, "
            "else every cache in the hub's index.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the garbage collection of artifact caches once: expired rows, then the objects no
    row references, and orphan objects older than the grace (see docs/artifacts.md)."""
    spec = _app_spec(ctx)
    if spec is not None and (db is not None or storage is not None):
        raise _fail("--db and --storage are the demo hub's; with --app the caches are your app's")

    async def run_app(spec: str) -> list[tuple[str, dict[str, int]]]:
        from freshkeep.integrations.app import open_app

        async with open_app(spec) as found:
            caches = found.caches(cache or ())
            if not caches:
                raise ConfigurationError(f"--app {spec!r} has no artifact cache to collect")
            out = []
            for c in caches:
                await c.create_tables()
                out.append((c.name, await c.gc()))
            return out

    try:
        results = asyncio.run(run_app(spec) if spec else _hub_gc(db, storage, cache))
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    table = Table("cache", "rows", "objects", "orphans", "temp files", "statements")
    for name, counts in results:
        table.add_row(
            name,
            *(str(counts.get(k, 0)) for k in ("rows", "objects", "orphans", "temp_files")),
            str(counts.get("statements", 0)),
        )
    console.print(table)


async def _hub_gc(
    db: str | None, storage: str | None, cache: list[str] | None
) -> list[tuple[str, dict[str, int]]]:
    """``freshkeep gc`` without ``--app``: the demo hub's index (every cache in it)."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from freshkeep.artifacts import ArtifactCache, artifacts_table
    from freshkeep.demo.exports import EXPORT_CACHE, default_storage
    from freshkeep.demo.hub import create_engine, normalize_url
    from freshkeep.settings import Settings
    from freshkeep.sql.engine import display_url

    async def never(key: str) -> bytes:  # GC never builds
        raise AssertionError(f"freshkeep gc does not build ({key!r})")

    settings = Settings.load()
    url = normalize_url(db or settings.database_url)
    where = storage or default_storage(
        url,
        settings.artifact_storage_url,
        "artifact_storage_url" in settings.model_fields_set,
    )
    engine = create_engine(url)
    try:
        first = ArtifactCache(EXPORT_CACHE, never, index=engine, storage=where)
        await first.create_tables()
        names = list(cache or [])
        if not names:
            async with engine.connect() as conn:
                found = await conn.scalars(select(artifacts_table.c.cache).distinct())
                names = sorted(found.all())
            names = names or [EXPORT_CACHE]
        out = []
        for name in names:
            c = (
                first
                if name == EXPORT_CACHE
                else ArtifactCache(name, never, index=engine, storage=where)
            )
            out.append((name, await c.gc()))
        return out
    except SQLAlchemyError as exc:
        raise FreshkeepError(f"cannot collect in {display_url(url)}: {exc}") from exc
    finally:
        await engine.dispose()


@app.command()
def version() -> None:
    """Print freshkeep's version."""
    from freshkeep import __version__

    console.print(f"freshkeep {__version__}", highlight=False)


def _add_jobs() -> None:
    from freshkeep.jobs.cli import app as jobs_app

    app.add_typer(jobs_app, name="jobs")


_add_jobs()


def main() -> None:
    """The ``freshkeep`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover - python -m freshkeep.integrations.cli
    main()
