"""One retry delay for every retry and reconnect loop: ``base * 2 ** (attempt - 1)``, capped.

:func:`backoff` is the pure formula; :class:`Backoff` is the same with the attempt counted for
you (a reconnect loop: :meth:`Backoff.next` after each failure, :meth:`Backoff.reset` once it
worked). Delays never decrease with the attempt, never exceed ``cap``, and a huge attempt
number neither overflows nor takes long (the exponent is clamped).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

_MAX_EXPONENT = 2100
"""Past ``2 ** 2100`` even the smallest positive float overflows: the delay is the cap."""


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based):
    ``base * 2 ** (attempt - 1)``, at most ``cap``. An ``attempt`` below 1 counts as 1."""
    if base <= 0 or cap <= 0:
        return max(0.0, min(base, cap))
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    try:
        delay = math.ldexp(base, exponent)  # base * 2**exponent
    except OverflowError:
        return cap
    return min(delay, cap)


class Backoff:
    """A doubling delay with its attempt counter (a reconnect loop).

    ``jitter`` (0 to 1) scales each delay by a random factor in ``[1 - jitter, 1]`` so that
    instances that failed together do not retry together; ``random`` is injectable for tests.
    """

    __slots__ = ("attempt", "base", "cap", "jitter", "random")

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        jitter: float = 0.0,
        random: Callable[[], float] = random.random,
    ) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], not {jitter!r}")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.random = random
        self.attempt = 0
        """Failures since the last :meth:`reset`."""

    def peek(self) -> float:
        """The delay :meth:`next` would return (without jitter), without counting a failure."""
        return backoff(self.attempt + 1, self.base, self.cap)

    def next(self) -> float:
        """Count a failure and return the delay before the next attempt."""
        self.attempt += 1
        delay = backoff(self.attempt, self.base, self.cap)
        if self.jitter:
            delay *= 1.0 - self.jitter * self.random()
        return delay

    def reset(self) -> None:
        """It worked: the next failure waits ``base`` again."""
        self.attempt = 0


__all__ = ["Backoff", "backoff"]
