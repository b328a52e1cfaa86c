"""Freshness policies and the pure decision of what a read does.

:func:`decide` takes the entry (or none), the current revisions, this process's must-rebuild
floor, the entry's age and the policy, and returns one of :data:`Decision`. It does no I/O and
keeps no state, so every rule of freshness is tested here without a database or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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

    ``max_age`` caps what nothing can see (rule 8): a section built longer ago than that is
    rebuilt whatever its revisions say (under ``swr`` it is served stale meanwhile, within
    ``max_stale``; the read's reason is ``expired``). ``None``: no cap.

    Ages count from when the entry was last known current (its build, or a later read that
    found it matching the revisions), so they bound how stale what is served can be;
    ``max_age`` counts from the build.
    """

    mode: Mode = "strict"
    max_stale: float = 0.0
    stale_if_error: float = 0.0
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "swr"):
            raise ConfigurationError(f"policy mode must be 'strict' or 'swr', not {self.mode!r}")
        for name in ("max_stale", "stale_if_error"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigurationError(f"policy {name} must be a number >= 0, not {value!r}")
        if self.max_age is not None and (not _is_number(self.max_age) or self.max_age <= 0):
            raise ConfigurationError(
                f"policy max_age must be a number > 0 or None, not {self.max_age!r}"
            )
        if self.mode == "swr" and self.max_stale <= 0:
            raise ConfigurationError("a stale-while-revalidate policy needs max_stale > 0")

    @classmethod
    def strict(cls, *, stale_if_error: float = 0.0, max_age: float | None = None) -> Policy:
        """Rebuild in line whenever a source changed (or the entry is older than
        ``max_age``)."""
        return cls("strict", 0.0, stale_if_error, max_age)

    @classmethod
    def swr(
        cls,
        max_stale: float,
        *,
        stale_if_error: float | None = None,
        max_age: float | None = None,
    ) -> Policy:
        """Serve stale for up to ``max_stale`` seconds while one background rebuild runs.

        ``stale_if_error`` defaults to five minutes, or ``max_stale`` if that is longer.
        """
        if stale_if_error is None:
            stale_if_error = max(300.0, max_stale)
        return cls("swr", max_stale, stale_if_error, max_age)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True, slots=True)
class Hit:
    """The entry matches the current revisions."""


Reason = Literal["changed", "expired"]
"""Why a section is rebuilt: its sources changed, or it is older than its ``max_age``."""


@dataclass(frozen=True, slots=True)
class Miss:
    """Build every section now (no entry, a forced refresh, or every section changed or
    expired)."""

    reason: Literal["absent", "refresh", "changed", "expired"]


@dataclass(frozen=True, slots=True)
class RebuildSections:
    """Rebuild ``sections`` in line and keep the others; ``background`` are served as they are
    and rebuilt in the background (sections whose own policy allows it)."""

    sections: tuple[str, ...]
    background: tuple[str, ...] = ()
    reason: Reason = "changed"


@dataclass(frozen=True, slots=True)
class ServeStale:
    """Serve the entry as it is and rebuild these sections in the background."""

    sections: tuple[str, ...]
    reason: Reason = "changed"


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
    now: float | None = None,
    policies: Mapping[str, Policy] | None = None,
) -> Decision:
    """Decide what a read does.

    ``current(sources)`` gives the current revisions of sources; ``must_rebuild(sources, fp)``
    says whether a fingerprint is older than a revision this process committed; ``age`` is the
    entry's age in seconds (its oldest section's). ``now`` is the wall-clock time, compared
    with each section's ``built_at`` for ``max_age`` (``None``: no age cap is applied).
    ``policies`` are per-section overrides of ``policy``: a section under ``strict`` is
    rebuilt in line even when the others may be served stale.
    """
    if entry is None:
        return Miss("absent")
    if refresh:
        return Miss("refresh")
    changed: list[str] = []
    expired: set[str] = set()
    hard: set[str] = set()
    invalid = entry.invalid
    for name, part in entry.sections.items():
        sources = entry.sources[name]
        if invalid and name in invalid:  # dropped by hand: rebuilt in line
            changed.append(name)
            hard.add(name)
            continue
        if part.fingerprint != current(sources):
            changed.append(name)
            if must_rebuild(sources, part.fingerprint):
                hard.add(name)
            continue
        if now is not None and is_expired(
            part.built_at, policies.get(name, policy) if policies else policy, now
        ):
            changed.append(name)
            expired.add(name)
    if not changed:
        return HIT
    inline: list[str] = []
    background: list[str] = []
    for name in changed:
        p = policies.get(name, policy) if policies else policy
        if p.mode == "swr" and name not in hard and age <= p.max_stale:
            background.append(name)
        else:
            inline.append(name)
    reason: Reason = "expired" if len(expired) == len(changed) else "changed"
    if not inline:
        return ServeStale(tuple(background), reason)
    if len(inline) == len(entry.sections):
        return Miss("expired" if expired.issuperset(inline) else "changed")
    inline_reason: Reason = "expired" if expired.issuperset(inline) else "changed"
    return RebuildSections(tuple(inline), tuple(background), inline_reason)


def is_expired(built_at: float, policy: Policy, now: float) -> bool:
    """Whether a section built at wall time ``built_at`` is older than ``policy.max_age``."""
    return policy.max_age is not None and now - built_at > policy.max_age


def may_serve_on_error(entry: Entry | None, *, age: float, policy: Policy) -> bool:
    """Whether ``entry`` may be served (``error-stale``) after a failed build."""
    return entry is not None and age <= policy.stale_if_error
