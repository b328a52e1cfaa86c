"""Commands that work on an application (``--app``) or the demo hub: ``process``, ``health``,
``gc``, ``version``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from freshkeep.exceptions import (
    ConfigurationError,
    FreshkeepError,
    MissingDependencyError,
    missing_extra,
)

try:
    import typer
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("cli", exc.name or "typer") from exc

if TYPE_CHECKING:
    from freshkeep.processing import Pipeline

from freshkeep.cli._root import (
    _app_spec,
    _fail,
    app,
    console,
    err_console,
)


@app.command()
def process(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="The processor to run (the demo hub's: evidence, usage). With --history: "
            "whose runs to list (default: every processor's).",
            show_default=False,
        ),
    ] = None,
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
    operator: Annotated[
        str | None,
        typer.Option(
            help="Your name, recorded with the run beside the OS user that ran it.",
            show_default=False,
        ),
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            "--history", help="List the recorded runs started by hand instead of running one."
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option(min=1, max=1000, help="With --history: how many runs to list.")
    ] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --history: print the runs as JSON.")
    ] = False,
) -> None:
    """Run a processor now, with a progress bar: one of --app's pipelines, else the demo hub's.
    The run is recorded in the pipeline's run history (who, when, outcome, counts); --history
    lists that record."""
    spec = _app_spec(ctx)
    if spec is not None and (db is not None or root is not None):
        raise _fail("--db and --root are the demo hub's; with --app the pipelines are your app's")
    if history:
        _history(spec, name, db, limit=limit, as_json=as_json)
        return
    if name is None:
        raise _fail("which processor? give its NAME (or --history to list past runs)")
    try:
        from freshkeep.exceptions import ProcessorBusy, UnknownProcessorError
        from freshkeep.processing import RunBy, RunStats
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    try:
        by = RunBy(_os_principal(), "cli", operator.strip() if operator is not None else None)
    except ConfigurationError as exc:
        raise _fail(f"--operator: {exc}") from exc

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())

    async def run_on(pipeline: Pipeline) -> RunStats:
        assert name is not None
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

            return await pipeline.run(name, progress=show, by=by)

    async def run_app(spec: str) -> RunStats:
        from freshkeep.integrations.app import open_app

        async with open_app(spec) as found:
            return await run_on(found.pipeline_of(name or ""))

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


def _os_principal() -> str:
    """Who runs this command: ``user@host``."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:255]


def _history(
    spec: str | None, name: str | None, db: str | None, *, limit: int, as_json: bool
) -> None:
    """``freshkeep process --history``: the recorded runs of --app's pipelines or the hub's."""
    import json
    from datetime import datetime

    try:
        from freshkeep.processing import RunHistory, RunRecord
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc

    async def recent(histories: list[RunHistory]) -> list[RunRecord]:
        runs: list[RunRecord] = []
        for h in histories:
            runs.extend(await h.recent(name, limit=limit))
        runs.sort(key=lambda r: (r.started_at, r.id or 0), reverse=True)
        return runs[:limit]

    async def of_app(spec: str) -> list[RunRecord]:
        from freshkeep.integrations.app import open_app

        async with open_app(spec) as found:
            histories: list[RunHistory] = []
            for pipeline in found.pipelines:
                h = pipeline.history
                if h is not None and all(h is not other for other in histories):
                    await _create_state_table(pipeline)
                    histories.append(h)
            if not histories:
                raise ConfigurationError(
                    f"--app {spec!r}: no pipeline keeps a run history (Pipeline(history=...))"
                )
            return await recent(histories)

    async def of_hub() -> list[RunRecord]:
        from freshkeep.demo.hub import create_engine, normalize_url
        from freshkeep.demo.sessions import Sessions
        from freshkeep.demo.settings import HubSettings
        from freshkeep.sql.engine import require_existing

        settings = HubSettings.load()
        url = normalize_url(db if db is not None else settings.database_url)
        require_existing(url)
        engine = create_engine(url)
        try:
            pipeline = Sessions.create(engine, settings).pipeline
            await _create_state_table(pipeline)  # a database from before the record existed
            assert pipeline.history is not None
            return await recent([pipeline.history])
        finally:
            await engine.dispose()

    try:
        runs = asyncio.run(of_app(spec) if spec else of_hub())
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except ConfigurationError as exc:
        raise _fail(str(exc)) from exc
    except FreshkeepError as exc:
        raise _fail(str(exc), 1) from exc
    if as_json:
        console.print_json(json.dumps([r.as_dict() for r in runs]))
        return
    if not runs:
        console.print("no recorded run" + (f" of processor {name!r}" if name else ""))
        return
    table = Table("started", "processor", "who", "via", "outcome", "processed", "failed")
    table.add_column("skipped")
    table.add_column("duration")
    for r in runs:
        started = datetime.fromtimestamp(r.started_at).astimezone().isoformat(timespec="seconds")
        who = r.who if r.operator is None else f"{r.operator} ({r.principal})"
        table.add_row(
            started,
            r.processor,
            who,
            r.via,
            r.outcome,
            f"{r.processed:,}",
            f"{r.failed:,}",
            f"{r.skipped + r.unchanged + r.deferred:,}",
            f"{r.duration:.3f} s",
        )
    console.print(table)


async def _create_state_table(pipeline: Pipeline) -> None:
    """Create freshkeep's tables if the pipeline keeps its state or its run history in SQL."""
    try:
        from freshkeep.processing.sql import SQLProcessingState, SQLRunHistory
    except ImportError:  # no SQLAlchemy: the state is not in a SQL table
        return
    if isinstance(pipeline.state, SQLProcessingState):
        await pipeline.state.create_table()
    if isinstance(pipeline.history, SQLRunHistory):
        await pipeline.history.create_table()


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
    prefix: Annotated[
        str | None,
        typer.Option(
            "--prefix",
            metavar="KEY_PREFIX",
            help="Collect only the keys that start with this (one tenant's or one topic's "
            "artifacts; exact, case included): their expired rows and the objects only they "
            "used. The hub's topic exports: --prefix 'TOPIC@'. Default: every key.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the garbage collection of artifact caches once: expired rows, then the objects no
    row references, and orphan objects older than the grace (see docs/artifacts.md). With
    --prefix, only the expired rows of the keys that start with it and their objects."""
    spec = _app_spec(ctx)
    if spec is not None and (db is not None or storage is not None):
        raise _fail("--db and --storage are the demo hub's; with --app the caches are your app's")
    if prefix is not None:
        _check_prefix(prefix)

    async def run_app(spec: str) -> list[tuple[str, dict[str, int]]]:
        from freshkeep.integrations.app import open_app

        async with open_app(spec) as found:
            caches = found.caches(cache or ())
            if not caches:
                raise ConfigurationError(f"--app {spec!r} has no artifact cache to collect")
            out = []
            for c in caches:
                await c.create_tables()
                out.append((c.name, await c.gc(prefix=prefix)))
            return out

    try:
        results = asyncio.run(run_app(spec) if spec else _hub_gc(db, storage, cache, prefix))
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    table = Table("cache", "rows", "objects", "orphans", "temp files", "statements")
    if prefix is not None:
        table.title = f"keys starting with {prefix!r}"
    for name, counts in results:
        table.add_row(
            name,
            *(str(counts.get(k, 0)) for k in ("rows", "objects", "orphans", "temp_files")),
            str(counts.get("statements", 0)),
        )
    console.print(table)


_MAX_PREFIX = 1024  # an artifact key's longest (freshkeep.artifacts.MAX_KEY_LENGTH)


def _check_prefix(prefix: str) -> None:
    """Fail (exit 2, one line saying what to give) for a ``--prefix`` that cannot scope a GC."""
    if not prefix:
        raise _fail(
            "--prefix is empty: give the start of the keys to collect (e.g. --prefix "
            "'tenant-7/'), or leave --prefix out to collect every key"
        )
    if len(prefix) > _MAX_PREFIX:
        raise _fail(
            f"--prefix has {len(prefix)} characters but a key has at most {_MAX_PREFIX}: "
            "give the start of the keys to collect"
        )


async def _hub_gc(
    db: str | None, storage: str | None, cache: list[str] | None, prefix: str | None = None
) -> list[tuple[str, dict[str, int]]]:
    """``freshkeep gc`` without ``--app``: the demo hub's index (every cache in it)."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from freshkeep.artifacts import ArtifactCache, artifacts_table
    from freshkeep.demo.exports import EXPORT_CACHE, default_storage
    from freshkeep.demo.hub import create_engine, normalize_url
    from freshkeep.settings import Settings
    from freshkeep.sql.engine import display_url, require_existing

    async def never(key: str) -> bytes:  # GC never builds
        raise AssertionError(f"freshkeep gc does not build ({key!r})")

    if prefix is not None and prefix.isdigit() and (not cache or EXPORT_CACHE in cache):
        raise ConfigurationError(
            f"--prefix {prefix!r} also matches topics {prefix}0, {prefix}1, …: the hub's "
            f"export keys are TOPIC@REVISION, so give --prefix '{prefix}@'"
        )
    settings = Settings.load()
    url = normalize_url(db or settings.database_url)
    require_existing(url)
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
            out.append((name, await c.gc(prefix=prefix)))
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
