"""Health: one status that says whether derived data is keeping up, with the reason and age.

A :class:`Health` registry (``keeper.health``) runs named checks together into a
:class:`HealthReport`: each :class:`CheckResult` has a :class:`Level` (``ok``, ``info``,
``warning``, ``error``), a detail an operator can act on and JSON-ready data. The headline is
``unhealthy`` if any check is an error, ``degraded`` if any is a warning, else ``ok`` (``info``
never changes it). Built-in checks watch the keeper's views, remote values, notifiers, shared
store, bus and artifact caches; :meth:`Health.watch_processor` watches a file processor's lag
and its oldest unprocessed item. Thresholds are overridable by ``FRESHKEEP_HEALTH_*``
(:class:`HealthConfig`). HTTP endpoints: :mod:`freshkeep.health.http` (extra ``starlette``).
"""

from __future__ import annotations

from freshkeep.health._config import HealthConfig, env_name, env_names
from freshkeep.health._format import age_text
from freshkeep.health._model import (
    EXIT_CODES,
    HTTP_STATUS,
    CheckResult,
    HeadlineStatus,
    HealthReport,
    Level,
    headline,
)
from freshkeep.health._processing import Backlog, ItemsSource, ProcessorWatch, assess
from freshkeep.health._registry import Check, CheckOutcome, Health, coerce, worst

__all__ = [
    "EXIT_CODES",
    "HTTP_STATUS",
    "Backlog",
    "Check",
    "CheckOutcome",
    "CheckResult",
    "HeadlineStatus",
    "Health",
    "HealthConfig",
    "HealthReport",
    "ItemsSource",
    "Level",
    "ProcessorWatch",
    "age_text",
    "assess",
    "coerce",
    "env_name",
    "env_names",
    "headline",
    "worst",
]
