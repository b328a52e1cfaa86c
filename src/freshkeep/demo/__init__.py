"""The reference hub that ``freshkeep demo`` serves.

A small service (topics, workstreams, tasks, decisions, progress events, members, milestones,
labels, comments, session files, exports) whose ``GET /state/summary`` is an expensive aggregate
over a dozen tables, kept fresh by freshkeep: a two-section view (``core`` and ``progress``)
with write hooks on the hub's ORM sessions. Needs ``pip install 'freshkeep[demo]'``.
"""

from __future__ import annotations

from freshkeep.demo.app import create_app as create_app
from freshkeep.demo.app import get_hub as get_hub
from freshkeep.demo.app import hub_app as hub_app
from freshkeep.demo.hub import Hub as Hub
from freshkeep.demo.hub import normalize_url as normalize_url
from freshkeep.demo.seed import DEFAULT_SEED_TASKS as DEFAULT_SEED_TASKS

__all__ = ["DEFAULT_SEED_TASKS", "Hub", "create_app", "get_hub", "hub_app", "normalize_url"]
