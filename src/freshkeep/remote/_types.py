"""The records, reads and counters of remote values."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from freshkeep.core.component import Snapshot
from freshkeep.exceptions import ConfigurationError

Fetch = Callable[[Any], Any]
"""``fetch(key) -> value``, sync or ``async``; raising means the fetch failed."""
Derive = Callable[[Any], Mapping[str, Mapping[Any, Any]]]
"""``derive(value) -> {lookup name: mapping}``: lookups computed from one fetched value."""
RemoteStatus = Literal["hit", "miss", "stale", "error-stale", "fallback"]


class _NoFallback:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_FALLBACK"


NO_FALLBACK: Final[Any] = _NoFallback()
"""The default ``fallback`` of a remote: none (a read with nothing to serve raises)."""
EMPTY: Mapping[str, Mapping[Any, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """One fetched value and the lookups derived from it: replaced as a whole, never mixed."""

    value: Any
    lookups: Mapping[str, Mapping[Any, Any]]
    fetched_at: float
    """Wall-clock seconds when the fetch started."""
    fetched_mono: float
    """Monotonic seconds when the fetch started (ages and the TTL count from here)."""
    backfilled: frozenset[Any] = frozenset()
    """Keys the fetch left out, taken from the remote's ``defaults``."""
    filled: frozenset[Any] = frozenset()
    """Keys whose item lacked fields: merged with its default, or replaced by
    ``fallback_item``."""


@dataclass(frozen=True, slots=True)
class RemoteRead:
    """What a read of a remote returned, and why."""

    value: Any
    lookups: Mapping[str, Mapping[Any, Any]]
    status: RemoteStatus
    age: float | None
    """Seconds since the value's fetch started; ``None`` for the fallback."""
    error: BaseException | None = None
    """The failure that made this read serve a stale value or the fallback."""
    backfilled: frozenset[Any] = frozenset()
    """Keys of the value taken from the remote's ``defaults`` (the fetch left them out)."""
    filled: frozenset[Any] = frozenset()
    """Keys of the value whose item was completed (its default's fields, ``fallback_item``)."""

    def lookup(self, name: str) -> Mapping[Any, Any]:
        """The derived lookup ``name`` of this read's value."""
        try:
            return self.lookups[name]
        except KeyError:
            known = ", ".join(sorted(self.lookups)) or "none"
            raise ConfigurationError(f"no derived lookup {name!r} (known: {known})") from None


@dataclass(slots=True)
class RemoteStats:
    """Counters of one remote (read by health checks and metrics)."""

    reads: dict[str, int] = field(default_factory=dict)
    fetches: int = 0
    fetch_errors: int = 0
    background_refreshes: int = 0
    collapsed: int = 0
    backfilled: int = 0
    """Keys that fetches left out, taken from ``defaults`` (summed over fetches)."""
    filled: int = 0
    """Items that fetches returned without a field, completed (summed over fetches)."""
    last_error: str | None = None
    last_error_at: float | None = None
    last_fetch_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteKeySnapshot:
    """One key of a remote: the age of its value and its last error."""

    age: float | None
    """Seconds since the fetch of its value started (``None``: no value yet)."""
    fetched_at: float | None
    expired: bool
    failures: int
    """Consecutive failed fetches (``0``: the last one succeeded)."""
    retry_in: float | None
    last_error: str | None
    last_error_at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteSnapshot(Snapshot):
    """A remote's settings, counters and keys now (:meth:`Remote.snapshot`)."""

    remote: str
    """The remote's name (as ``name``: the key of the stats JSON)."""
    ttl: float
    max_stale: float | None
    swr: bool
    reads: Mapping[str, int]
    """Reads by status."""
    fetches: int
    fetch_errors: int
    background_refreshes: int
    collapsed: int
    backfilled: int
    """Keys that fetches left out, taken from ``defaults``."""
    filled: int
    """Items that fetches returned without a field, completed."""
    last_error: str | None
    last_error_at: float | None
    last_fetch_at: float | None
    keys: int
    failing: int
    """Keys whose last fetch failed."""
    max_age: float | None
    """Age of the oldest value held (``None``: none)."""
    in_flight: int
    values: Mapping[str, RemoteKeySnapshot]
    """Each key (as a string) and its state."""
    now: float
    """The wall time of the snapshot."""


@dataclass(slots=True)
class Slot:
    """The state of one key of a remote (internal)."""

    record: RemoteRecord | None = None
    expires: float = -math.inf
    failures: int = 0
    backoff: float = 0.0
    retry_at: float = -math.inf
    error: BaseException | None = None
    error_at: float | None = None
    generation: int = 0
