"""Clocks: monotonic time for ages and bounds, wall time for what users read."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where freshkeep reads time from. Inject a fake one in tests."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (ages, intervals, bounds)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (``built_at`` shown to users)."""
        ...


class SystemClock:
    """The real clocks of :mod:`time`."""

    __slots__ = ()

    def monotonic(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """Return :func:`time.time`."""
        return time.time()


SYSTEM_CLOCK = SystemClock()
