"""Freshness policies and the pure decision of what a read does.

:func:`decide` takes the entry (or none), the current revisions, this process's must-rebuild
floor, the entry's age and the policy, and returns one of :data:`Decision`. It does no I/O and
keeps no state, so every rule of freshness is tested here without a database or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from freshkeep.core.entry import Entry, Fingerprint
from freshkeep.exceptions import ConfigurationError

Mode = Literal["strict", "swr"]


@dataclass(frozen=True, slots=True)
class Policy:
    """How a view answers a read whose entry no longer matches the revisions.

    - ``strict``: rebuild in line; a reader never gets a value it knows is stale.
    - ``swr`` (stale-while-revalidate): serve the stale entry and rebuild in the background,
      as long as the entry is at most ``max_stale`` seconds old. A change committed by this
      process is always rebuilt in line (read-your-writes).

    ``stale_if_error``: when a build fails (or revisions cannot be read), serve the last good
    entry if it is at most that many seconds old; ``0`` never serves a value after a failure.

    Ages count from when the entry was last known current (its build, or a later read that
    found it matching the revisions), so they bound how stale what is served can be.
    """

    mode: Mode = "strict"
    max_stale: float = 0.0
    stale_if_error: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "swr"):
            raise ConfigurationError(f"policy mode must be 'strict' or 'swr', not {self.mode!r}")
        for name in ("max_stale", "stale_if_error"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ConfigurationError(f"policy {name} must be a number >= 0, not {value!r}")
        if self.mode == "swr" and self.max_stale <= 0:
            raise ConfigurationError("a stale-while-revalidate policy needs max_stale > 0")

    @classmethod
    def strict(cls, *, stale_if_error: float = 0.0) -> Policy:
        """Rebuild in line whenever a source changed."""
        return cls("strict", 0.0, stale_if_error)

    @classmethod
    def swr(cls, max_stale: float, *, stale_if_error: float | None = None) -> Policy:
        """Serve stale for up to ``max_stale`` seconds while one background rebuild runs.

        ``stale_if_error`` defaults to five minutes, or ``max_stale`` if that is longer.
        """
        if stale_if_error is None:
            stale_if_error = max(300.0, max_stale)
        return cls("swr", max_stale, stale_if_error)


@dataclass(frozen=True, slots=True)
class Hit:
    """The entry matches the current revisions."""


@dataclass(frozen=True, slots=True)
class Miss:
    """Build every section now (no entry, a forced refresh, or every section changed)."""

    reason: Literal["absent", "refresh", "changed"]


@dataclass(frozen=True, slots=True)
class RebuildSections:
    """Rebuild these sections in line and keep the others."""

    sections: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServeStale:
    """Serve the entry as it is and rebuild these sections in the background."""

    sections: tuple[str, ...]


Decision = Hit | Miss | RebuildSections | ServeStale

HIT = Hit()


def decide(
    entry: Entry | None,
    current: Callable[[Sequence[str]], Fingerprint],
    must_rebuild: Callable[[Sequence[str], Fingerprint], bool],
    *,
    age: float,
    policy: Policy,
    refresh: bool = False,
) -> Decision:
    """Decide what a read does.

    ``current(sources)`` gives the current revisions of sources; ``must_rebuild(sources, fp)``
    says whether a fingerprint is older than a revision this process committed; ``age`` is the
    entry's age in seconds (its oldest section's).
    """
    if entry is None:
        return Miss("absent")
    if refresh:
        return Miss("refresh")
    changed: list[str] = []
    hard = False
    for name, part in entry.sections.items():
        sources = entry.sources[name]
        if part.fingerprint != current(sources):
            changed.append(name)
            hard = hard or must_rebuild(sources, part.fingerprint)
    if not changed:
        return HIT
    if policy.mode == "swr" and not hard and age <= policy.max_stale:
        return ServeStale(tuple(changed))
    if len(changed) == len(entry.sections):
        return Miss("changed")
    return RebuildSections(tuple(changed))


def may_serve_on_error(entry: Entry | None, *, age: float, policy: Policy) -> bool:
    """Whether ``entry`` may be served (``error-stale``) after a failed build."""
    return entry is not None and age <= policy.stale_if_error
