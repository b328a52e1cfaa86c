"""The ``freshkeep`` command line (typer + rich): ``demo``, ``migrate`` and ``version``.

``freshkeep demo`` serves the reference hub (:mod:`freshkeep.demo`) with uvicorn. Its database
is ``--db`` (an async SQLAlchemy URL or a SQLite file path), else ``FRESHKEEP_DATABASE_URL``,
else ``freshkeep-demo.db`` in the current directory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from freshkeep.exceptions import FreshkeepError, MissingDependencyError, missing_extra

try:
    import typer
    from rich.console import Console, Group
    from rich.logging import RichHandler
    from rich.panel import Panel
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("cli", exc.name or "typer") from exc

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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


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
        from freshkeep.demo.hub import check_database, display_url, normalize_url
        from freshkeep.settings import Settings
    except MissingDependencyError as exc:
        raise _fail(str(exc)) from exc
    except ImportError as exc:
        raise _fail(str(missing_extra("demo", exc.name or "uvicorn"))) from exc
    level = log_level.upper()
    if level not in logging.getLevelNamesMapping():
        raise _fail(f"unknown log level {log_level!r}")
    try:
        url = normalize_url(db if db is not None else Settings.load().database_url)
        hub_app = create_app(url, seed_tasks=seed_tasks)
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
        from freshkeep.integrations import migrate as migrations
        from freshkeep.integrations import triggers as capture
        from freshkeep.settings import Settings
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


@app.command()
def version() -> None:
    """Print freshkeep's version."""
    from freshkeep import __version__

    console.print(f"freshkeep {__version__}", highlight=False)


def main() -> None:
    """The ``freshkeep`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover - python -m freshkeep.integrations.cli
    main()
