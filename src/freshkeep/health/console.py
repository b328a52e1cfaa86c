"""``freshkeep health``: a service's health as a table, and an exit status for cron and probes.

Exit status: 0 ok, 1 degraded, 2 unhealthy, or 2 when the service cannot be reached.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from freshkeep.exceptions import HealthUnreachableError, missing_extra
from freshkeep.health._format import age_text
from freshkeep.health._model import EXIT_CODES, Level
from freshkeep.health.client import Fetched, fetch

if TYPE_CHECKING:
    from rich.console import Console

UNREACHABLE = 2
"""The exit status when the service cannot be reached (as unhealthy: a probe must act)."""

_STYLE = {
    Level.OK: "green",
    Level.INFO: "cyan",
    Level.WARNING: "yellow",
    Level.ERROR: "bold red",
}
_HEADLINE_STYLE = {"ok": "bold green", "degraded": "bold yellow", "unhealthy": "bold red"}


def render(fetched: Fetched, console: Console, *, now: float | None = None) -> None:
    """Print ``fetched`` as a headline and, for a detailed report, a table of its checks
    (worst first)."""
    try:
        from rich.table import Table
    except ImportError as exc:  # pragma: no cover - the cli extra brings rich
        raise missing_extra("cli", exc.name or "rich") from exc
    report = fetched.report
    style = _HEADLINE_STYLE[report.status]
    when = ""
    if now is not None and report.generated_at:
        when = f" ({age_text(max(0.0, now - report.generated_at))} ago)"
    console.print(
        f"[{style}]{report.status}[/] from {fetched.url}{when}", highlight=False, soft_wrap=True
    )
    if fetched.note:
        console.print(
            f"[yellow]note:[/] {fetched.note}; showing the headline only", highlight=False
        )
    if not fetched.detailed:
        return
    table = Table(title=None, show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("detail", overflow="fold")
    checks = sorted(report.checks, key=lambda c: (-c.level.severity, c.name))
    for c in checks:
        table.add_row(c.name, f"[{_STYLE[c.level]}]{c.level.value}[/]", c.detail)
    console.print(table)


def run(
    url: str,
    token: str | None,
    *,
    console: Console,
    err_console: Console,
    as_json: bool = False,
    timeout: float = 10.0,
    now: float | None = None,
) -> int:
    """Fetch and print the health of the service at ``url``; return the exit status."""
    try:
        fetched = fetch(url, token=token, timeout=timeout)
    except HealthUnreachableError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return UNREACHABLE
    if as_json:
        console.print_json(json.dumps(fetched.report.as_dict(detailed=fetched.detailed)))
    else:
        render(fetched, console, now=now)
    return EXIT_CODES[fetched.report.status]
