"""Single-flight: at most one run of a piece of work per key at a time; waiters share it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """Runs at most one task per key; every caller for that key awaits the same task.

    The task is shielded from its callers: a caller that is cancelled (a client that went away)
    does not cancel the work the other callers wait for. A task nobody awaits (a background
    refresh) still has its exception retrieved, and reported to ``on_error``.
    """

    __slots__ = ("_flights", "on_error")

    def __init__(self, on_error: Callable[[K, BaseException], None] | None = None) -> None:
        self._flights: dict[K, asyncio.Task[T]] = {}
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self._flights)

    def running(self, key: K) -> asyncio.Task[T] | None:
        """The task in flight for ``key``, if any."""
        return self._flights.get(key)

    def start(
        self, key: K, work: Callable[[], Coroutine[Any, Any, T]]
    ) -> tuple[asyncio.Task[T], bool]:
        """Return the task for ``key`` and whether this call started it."""
        task = self._flights.get(key)
        if task is not None:
            return task, False
        task = asyncio.get_running_loop().create_task(work())
        self._flights[key] = task
        task.add_done_callback(lambda t: self._done(key, t))
        return task, True

    def _done(self, key: K, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.on_error is not None:
            self.on_error(key, exc)

    async def run(self, key: K, work: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, bool]:
        """Run ``work`` for ``key`` or join the run in flight; return its result and whether
        this call started it."""
        task, leader = self.start(key, work)
        return await asyncio.shield(task), leader

    async def wait_all(self) -> None:
        """Wait until no work is in flight (tests and shutdown)."""
        while self._flights:
            await asyncio.gather(*self._flights.values(), return_exceptions=True)
