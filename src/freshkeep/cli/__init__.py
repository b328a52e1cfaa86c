"""The ``freshkeep`` command line (typer + rich): ``demo``, ``bench``, ``migrate``, ``process``,
``gc``, ``health``, ``jobs``, ``version``.

``freshkeep --app module:attribute …`` (or ``FRESHKEEP_APP``) points ``process``, ``gc``,
``health`` and ``jobs`` at your application (see :mod:`freshkeep.integrations.app`); without it
they work on the demo hub's database (``--db``).

``freshkeep demo`` serves the reference hub (:mod:`freshkeep.demo`) with uvicorn. Its database
is ``--db`` (an async SQLAlchemy URL or a SQLite file path), else ``FRESHKEEP_DATABASE_URL``,
else ``freshkeep-demo.db`` in the current directory. ``freshkeep bench`` runs the benchmarks of
:mod:`freshkeep.bench` with a progress bar and prints their report.

The command needs the ``cli`` extra (typer, rich); without it, ``freshkeep`` prints one line
naming the extra to install, not a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from freshkeep.exceptions import MissingDependencyError


def main() -> None:
    """The ``freshkeep`` console script."""
    try:
        from freshkeep.cli._main import app
    except MissingDependencyError as exc:
        print(f"freshkeep: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app()


def __getattr__(name: str) -> Any:
    """``app``, ``DEFAULT_SEED_TASKS``, ``hub`` and ``work``, imported on first use (they need
    the ``cli`` extra)."""
    if name in ("app", "DEFAULT_SEED_TASKS", "hub", "work"):
        from freshkeep.cli import _main

        return getattr(_main, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_SEED_TASKS", "app", "main"]
