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

from freshkeep.cli import hub as hub
from freshkeep.cli import work as work
from freshkeep.cli._root import DEFAULT_SEED_TASKS as DEFAULT_SEED_TASKS
from freshkeep.cli._root import app as app
from freshkeep.cli.jobs import app as _jobs_app

app.add_typer(_jobs_app, name="jobs")


def main() -> None:
    """The ``freshkeep`` console script."""
    app()


__all__ = ["DEFAULT_SEED_TASKS", "app", "main"]
