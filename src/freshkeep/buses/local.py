"""The in-process bus: delivers revisions to the listeners of this process, synchronously."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import ClassVar

from freshkeep.core.component import Kind
from freshkeep.core.revision import Revision
from freshkeep.ports import Bus, BusSnapshot, Listener

log = logging.getLogger("freshkeep.bus")


class LocalBus(Bus):
    """A bus inside one process (the embedded default).

    Delivery is synchronous and in order; a listener that raises is logged and counted and
    does not stop delivery to the others.
    """

    __slots__ = ("_listeners", "errors", "published")
    kind: ClassVar[Kind] = "bus"
    name = "local"

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.published = 0
        self.errors = 0

    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver ``revisions`` to every listener."""
        self.publish_nowait(revisions, origin=origin)

    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver ``revisions`` to every listener, from synchronous code."""
        self.published += 1
        for listener in tuple(self._listeners):
            try:
                listener(revisions, origin)
            except Exception:
                self.errors += 1
                log.exception("bus listener %r failed", listener)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; return a function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def snapshot(self) -> BusSnapshot:
        """Its kind (``local``): an in-process bus has no connection to report."""
        return BusSnapshot(name=self.name, kind="local")
