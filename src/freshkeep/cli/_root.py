"""The root of the ``freshkeep`` command: the Typer app, ``--app`` and error output."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Annotated, Any

from freshkeep.exceptions import (
    missing_extra,
)

try:
    import typer
    import typer.core
    from rich.console import Console
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("cli", exc.name or "typer") from exc

from freshkeep.cli._help import HelpGroup

if TYPE_CHECKING:
    pass

DEFAULT_SEED_TASKS = 10_000
"""The default of ``--seed-tasks`` (the same as :data:`freshkeep.demo.DEFAULT_SEED_TASKS`)."""


class _Group(HelpGroup):
    """The root group: ``--triggers`` given without tables means every table."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        for i, arg in enumerate(args):
            if arg in ("--triggers", "--remove-triggers") and (
                i + 1 == len(args) or args[i + 1].startswith("-")
            ):
                args.insert(i + 1, "*")
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Group,
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
        from freshkeep.cli.jobs import APP_QUEUES

        def queues() -> AbstractAsyncContextManager[Any]:
            from freshkeep.integrations.app import open_app

            return open_app(app_spec)

        ctx.meta[APP_QUEUES] = queues  # `freshkeep jobs` may not import this layer


def _app_spec(ctx: typer.Context) -> str | None:
    spec = ctx.meta.get(APP_META)
    return spec if isinstance(spec, str) else None
