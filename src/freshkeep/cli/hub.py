"""The demo hub's commands: ``demo``, ``migrate``, ``bench``."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shlex
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from freshkeep.exceptions import (
    FreshkeepError,
    MissingDependencyError,
    missing_extra,
)

try:
    import typer
    from rich.console import Group
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
    from freshkeep.processing.legacy import StateImport

from freshkeep.cli._root import (
    DEFAULT_SEED_TASKS,
    _fail,
    app,
    console,
    err_console,
)

REPORT_WIDTH = 100
"""The widest ``freshkeep bench`` prints its report (the width of ``results.md``'s lines)."""


def _port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or ``None`` when it can (it is freed again)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"unknown host: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


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
    busy = _port_taken(host, port)  # before seeding: a busy port fails in a second, not later
    if busy is not None:
        raise _fail(f"cannot listen on {host}:{port} ({busy}): pass another --port")
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
            "Default: the FRESHKEEP_DATABASE_URL setting.",
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
            help="Install the change-capture trigger(s) on TABLE (PostgreSQL or SQLite; "
            "repeat, or comma-separate; alone: every table but freshkeep's own). Any "
            "program's writes to it then bump its revision.",
            show_default=False,
        ),
    ] = None,
    remove_triggers: Annotated[
        list[str] | None,
        typer.Option(
            "--remove-triggers",
            metavar="TABLE",
            help="Drop the change-capture trigger(s) of TABLE (alone: of every table).",
            show_default=False,
        ),
    ] = None,
    partition: Annotated[
        list[str] | None,
        typer.Option(
            "--partition",
            metavar="T.COL[:N]",
            help="With --triggers: a write to table T bumps the partitions of the values of "
            "its column COL it touched (N counters, default 1024) instead of every partition "
            "of T. Repeat for more columns or tables.",
            show_default=False,
        ),
    ] = None,
    channel: Annotated[
        str, typer.Option(help="NOTIFY channel of the triggers (the PostgreSQL bus's channel).")
    ] = "freshkeep",
    import_state: Annotated[
        str | None,
        typer.Option(
            "--import-processing-state",
            metavar="LEGACY_TABLE",
            help="Copy an earlier service's per-file processing state table into freshkeep's "
            "as --processor's rows, then drop it (with the upgrade, in one transaction; "
            "nothing to do without that table). See docs/processing.md.",
            show_default=False,
        ),
    ] = None,
    processor: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="With --import-processing-state: the processor the rows belong to.",
            show_default=False,
        ),
    ] = None,
    strip_prefix: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="With --import-processing-state: a directory removed from the front of the "
            "legacy paths (the processor's root, if they are absolute).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or upgrade freshkeep's own tables (idempotent); optionally install triggers, or
    import a legacy per-file processing state table."""
    if (import_state is None) != (processor is None):
        raise _fail("--import-processing-state LEGACY_TABLE and --processor NAME go together")
    if strip_prefix is not None and import_state is None:
        raise _fail("--strip-prefix is an option of --import-processing-state")
    try:
        from freshkeep.core.partitions import DEFAULT_BUCKETS, MAX_BUCKETS, Partitioned
        from freshkeep.settings import Settings
        from freshkeep.sql import migrate as migrations
        from freshkeep.sql import triggers as capture
        from freshkeep.sql.engine import display_url
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc

    def split(values: list[str] | None) -> list[str]:
        return [t.strip() for v in values or () for t in v.split(",") if t.strip()]

    def partitioned(value: str) -> Partitioned:
        spec, colon, count = value.partition(":")
        table, dot, column = spec.rpartition(".")
        usage = (
            f"--partition {value!r}: expected TABLE.COLUMN or TABLE.COLUMN:BUCKETS with "
            f"BUCKETS from 1 to {MAX_BUCKETS}, e.g. --partition orders.customer_id:"
            f"{DEFAULT_BUCKETS}"
        )
        if not (table and dot and column) or (colon and not count.strip().isdigit()):
            raise _fail(usage)
        try:  # by the bare table name: the triggers bump table:<bare name>/...
            bare = table.rsplit(".", 1)[-1]
            return Partitioned(f"table:{bare}", column, int(count) if colon else DEFAULT_BUCKETS)
        except FreshkeepError as exc:
            raise _fail(f"{usage} ({exc})") from exc

    partitions = [partitioned(v) for v in split(partition)]
    if partitions and not split(triggers):
        raise _fail("--partition applies to tables of --triggers: add --triggers TABLE")

    try:
        settings = Settings.load()
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    if db is None and "database_url" not in settings.model_fields_set:
        raise _fail("which database? pass --db PATH_OR_URL (or set FRESHKEEP_DATABASE_URL)")
    try:
        url = migrations.normalize_url(db if db is not None else settings.database_url)
        console.print(f"database: {display_url(url)}", highlight=False)
        imported = None
        if import_state is not None and processor is not None:
            from freshkeep.processing.legacy import import_processing_state

            imported = import_processing_state(
                url, import_state, processor=processor, strip_prefix=strip_prefix, revision=revision
            )
            assert imported.migration is not None
            result = imported.migration
        else:
            result = migrations.upgrade(url, revision)
        if result.changed:
            for step in result.applied:
                console.print(f"applied {step}", highlight=False)
            console.print(f"freshkeep tables at revision {result.after}", highlight=False)
        else:
            console.print(f"already up to date (revision {result.after})", highlight=False)
        if imported is not None:
            _print_import(imported)
        if add := split(triggers):
            done = capture.install_triggers(url, add, channel=channel, partitions=partitions)
            if done:
                shown = [
                    name
                    + "".join(
                        f" (by {p.column}, {p.buckets} buckets)"
                        for p in partitions
                        if p.table == f"table:{name}"
                    )
                    for name in done
                ]
                console.print(f"triggers installed on: {', '.join(shown)}", highlight=False)
            else:
                console.print(
                    "no table of the application yet: run this again once it created them "
                    "(freshkeep demo installs triggers on its own tables)",
                    highlight=False,
                )
        if drop := split(remove_triggers):
            done = capture.remove_triggers(url, drop)
            console.print(f"triggers removed from: {', '.join(done)}", highlight=False)
    except FreshkeepError as exc:
        raise _fail(str(exc)) from exc
    except Exception as exc:  # a driver's error: a message, not a traceback
        raise _fail(f"{type(exc).__name__}: {exc}", 1) from exc


def _print_import(done: StateImport) -> None:
    """What ``migrate --import-processing-state`` imported."""
    if not done.found:
        console.print(
            f"no table {done.table!r}: no processing state to import (a fresh install, or "
            "imported already)",
            highlight=False,
        )
        return
    console.print(
        f"imported {done.imported:,} row(s) of {done.table!r} as processor {done.processor!r} "
        f"({done.read:,} read, {done.kept:,} kept as freshkeep had them, {done.skipped:,} "
        f"without a path); {done.table!r} dropped",
        highlight=False,
    )


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
        bool, typer.Option("--quick", help="A smoke run (small hub, ~5 s per mode): < 2 min.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Where to write results.md, results.json and results.png. Default: "
            "benchmarks/results, or a temporary directory with --quick.",
            show_default=False,
        ),
    ] = None,
    level: Annotated[
        list[str] | None,
        typer.Option(
            help="library, service, distributed, keyed, fastapi and/or scale (repeat; default: "
            "library and service; distributed needs PostgreSQL and Redis; keyed: per-table "
            "against per-key revisions of a view read by key; fastapi: the hub's FastAPI route "
            "beside bare Starlette and FastAPI routes, with wrk when installed; scale: a hub of "
            "--seed-tasks tasks, 1,000,000 by default: seeding, a full build, the read after a "
            "core write with and without deltas, memory).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            help="Service modes to run (repeat; default: all): floor, floor-fastapi, "
            "freshkeep, freshkeep-fastapi, ttl, maxprobe, uncached.",
            show_default=False,
        ),
    ] = None,
    seed_tasks: Annotated[
        int | None, typer.Option(min=0, help="Tasks in the benchmark's hub.", show_default=False)
    ] = None,
    scale_db: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The scale level's SQLite file: seeded when it holds no data, and kept, so "
            "that the next run skips the seeding. Default: a temporary file.",
            show_default=False,
        ),
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
        typer.Option(
            min=0.1,
            help="Writes per second in the service level's write phase and the keyed level "
            "(default 4).",
            show_default=False,
        ),
    ] = None,
    connections: Annotated[
        int | None,
        typer.Option(min=1, help="Keep-alive connections of the load.", show_default=False),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Rounds of the library level's hits and of the fastapi level.",
            show_default=False,
        ),
    ] = None,
    keyed_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            help="Measured phase of the keyed level (s; default 30, 3 with --quick).",
            show_default=False,
        ),
    ] = None,
    keys: Annotated[
        int | None,
        typer.Option(min=1, help="Keys of the keyed level (default 1,000).", show_default=False),
    ] = None,
    keyed_read_rate: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Reads per second offered to each view of the keyed level (default 300).",
            show_default=False,
        ),
    ] = None,
    keyed_buckets: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1023,
            help="The small bucket count the keyed level compares with the default 1,024 "
            "(default 64).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="PostgreSQL URL for the keyed level (two fresh schemas on it, dropped at the "
            "end; needs the postgres extra). Default: SQLite files in a temporary directory.",
            show_default=False,
        ),
    ] = None,
    chart: Annotated[bool, typer.Option(help="Draw results.png (needs matplotlib).")] = True,
) -> None:
    """Measure what freshkeep costs against a dict, an await, peer caches, a fixed TTL, a
    MAX(updated_at) probe and no cache, and what a revision probe costs on a SQLite file (with
    --level keyed: per-table against per-key revisions); write results.md, results.json and
    results.png."""
    try:
        from freshkeep import bench as fkbench
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except ImportError as exc:
        raise _fail(str(missing_extra("bench", exc.name or "uvicorn"))) from exc
    config = fkbench.quick() if quick else fkbench.full()
    levels = tuple(level) if level else config.levels
    if unknown := set(levels) - set(fkbench.LEVELS):
        raise _fail(f"unknown level(s): {', '.join(sorted(unknown))}")
    modes = tuple(mode) if mode else config.service.modes
    if unknown := set(modes) - set(fkbench.MODE_NAMES):
        raise _fail(f"unknown mode(s): {', '.join(sorted(unknown))}")
    config.levels, config.service.modes, config.chart = levels, modes, chart
    if seed_tasks is not None:
        config.library.seed_tasks = config.service.seed_tasks = seed_tasks
        config.distributed.seed_tasks = config.fastapi.seed_tasks = seed_tasks
        config.scale.seed_tasks = seed_tasks
    if scale_db is not None:
        config.scale.database = str(scale_db)
    if read_seconds is not None:
        config.service.read_s = config.distributed.read_s = read_seconds
        config.fastapi.seconds = read_seconds
    if write_seconds is not None:
        config.service.write_s = write_seconds
    if write_rate is not None:
        config.service.write_rate = config.keyed.write_rate = write_rate
    if keyed_seconds is not None:
        config.keyed.seconds = keyed_seconds
    if keys is not None:
        config.keyed.keys = keys
    if keyed_read_rate is not None:
        config.keyed.read_rate = keyed_read_rate
    if keyed_buckets is not None:
        config.keyed.small_buckets = keyed_buckets
    if db is not None:
        config.keyed.database = db
    if connections is not None:
        config.service.connections = config.distributed.connections = connections
        config.fastapi.connections = connections
    if rounds is not None:
        config.library.rounds = config.fastapi.rounds = rounds
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
    # As wide as results.md at most (100 columns): its tables wrap within that, on a terminal
    # or in a log (where rich would take 80).
    width = min(console.width, REPORT_WIDTH) if console.is_terminal else REPORT_WIDTH
    console.print(Markdown(paths["markdown"].read_text()), width=width)
    for kind, path in paths.items():
        console.print(f"[bold]{kind}[/]: {path}", highlight=False)
