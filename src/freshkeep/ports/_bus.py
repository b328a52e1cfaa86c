"""The bus port: committed revisions carried from one process to the others."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from freshkeep.core.revision import Revision

Listener = Callable[[Mapping[str, Revision], str], None]
"""Called with the revisions of one published commit and the id of the keeper that published
it (so a keeper can skip its own)."""

ConnectCallback = Callable[[], Awaitable[Any] | None]
"""Called after each successful (re)subscribe, e.g. ``keeper.resync`` (sync or async)."""


def _nothing() -> None:
    """The remover of a callback that was never registered."""


class Bus(ABC):
    """Publishes committed revisions to every subscribed process (at-most-once).

    Required: :meth:`publish`, :meth:`publish_nowait`, :meth:`subscribe`. Optional
    capabilities, "not supported" in this base (an in-process bus needs none of them):
    :meth:`start` answers ``True`` (connected), :meth:`on_connect` / :meth:`on_disconnect`
    register nothing (the bus never disconnects), :meth:`aclose` does nothing.
    """

    @abstractmethod
    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver ``revisions`` (published by the keeper ``origin``) to the subscribers."""

    @abstractmethod
    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver from synchronous code (a sync session's commit), best effort."""

    @abstractmethod
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; return a function that unsubscribes it."""

    async def start(self) -> bool:
        """Connect (a network bus); return whether it is connected. A bus that cannot connect
        yet keeps trying in the background. The base is always connected."""
        return True

    def on_connect(self, callback: ConnectCallback) -> Callable[[], None]:
        """Call ``callback`` after every successful (re)subscribe; return a remover. The base
        never reconnects, so it registers nothing."""
        return _nothing

    def on_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when an outage starts; return a remover. The base never
        disconnects, so it registers nothing."""
        return _nothing

    async def aclose(self) -> None:
        """Stop and release connections (the base has none)."""
        return None


__all__ = ["Bus", "ConnectCallback", "Listener"]
