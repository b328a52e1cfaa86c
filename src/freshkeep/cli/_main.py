"""The whole ``freshkeep`` command: the root, the hub's commands, the app commands, ``jobs``."""

from __future__ import annotations

from freshkeep.cli import hub as hub
from freshkeep.cli import work as work
from freshkeep.cli._root import DEFAULT_SEED_TASKS as DEFAULT_SEED_TASKS
from freshkeep.cli._root import app as app
from freshkeep.cli.jobs import app as _jobs_app

app.add_typer(_jobs_app, name="jobs")

__all__ = ["DEFAULT_SEED_TASKS", "app", "hub", "work"]
