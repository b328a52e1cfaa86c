"""The bus port: committed revisions carried from one process to the others."""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from freshkeep.core.change_wire import CommitChanges
from freshkeep.core.component import Component, Kind, Snapshot
from freshkeep.core.revision import Revision

Listener = Callable[[Mapping[str, Revision], str], None]
"""Called with the revisions of one published commit and the id of the keeper that published
it (so a keeper can skip its own)."""

ChangesListener = Callable[[Mapping[str, Revision], str, CommitChanges], None]
"""Called, before the :data:`Listener` s, with the revisions, origin and known changed rows of a
published commit whose message carried them (:meth:`Bus.on_changes`)."""

ConnectCallback = Callable[[], Awaitable[Any] | None]
"""Called after each successful (re)subscribe, e.g. ``keeper.resync`` (sync or async)."""


def _nothing() -> None:
    """The remover of a callback that was never registered."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BusSnapshot(Snapshot):
    """What a bus reports (:meth:`Bus.snapshot`): the in-process bus only its kind."""

    kind: str
    """``local``, ``redis``, ``postgres``..."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RemoteBusSnapshot(BusSnapshot):
    """A bus between processes: its connection state and counters (wall-clock seconds;
    ``last_outage_ended_at`` is ``None`` while an outage lasts)."""

    channel: str
    started: bool
    connected: bool
    connects: int
    reconnects: int
    published: int
    received: int
    errors: int
    malformed: int
    dropped: int
    last_error: str | None
    last_error_at: float | None
    last_outage_started_at: float | None
    last_outage_ended_at: float | None
    last_delivery_ms: float | None = None
    """Milliseconds from the send of the last message received to its delivery (by the two
    hosts' clocks; ``None`` before one that carries its send time)."""


class Bus(Component):
    """Publishes committed revisions to every subscribed process (at-most-once).

    Required: :meth:`publish`, :meth:`publish_nowait`, :meth:`subscribe`. Optional
    capabilities, "not supported" in this base (an in-process bus needs none of them):
    :meth:`start` answers ``True`` (connected), :meth:`on_connect` / :meth:`on_disconnect`
    register nothing (the bus never disconnects), :meth:`aclose` does nothing; the base
    :meth:`snapshot` reports only the bus's class.
    """

    kind: ClassVar[Kind] = "bus"
    name: str = "bus"

    @abstractmethod
    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver ``revisions`` (published by the keeper ``origin``) to the subscribers."""

    @abstractmethod
    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Deliver from synchronous code (a sync session's commit), best effort."""

    @abstractmethod
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; return a function that unsubscribes it."""

    async def publish_commit(
        self, revisions: Mapping[str, Revision], changes: CommitChanges, *, origin: str = ""
    ) -> None:
        """:meth:`publish` a commit with its known changed rows, for the buses that carry
        them to other processes (the base publishes the revisions only)."""
        await self.publish(revisions, origin=origin)

    def publish_commit_nowait(
        self, revisions: Mapping[str, Revision], changes: CommitChanges, *, origin: str = ""
    ) -> None:
        """:meth:`publish_commit` from synchronous code, best effort."""
        self.publish_nowait(revisions, origin=origin)

    def on_changes(self, listener: ChangesListener) -> Callable[[], None]:
        """Call ``listener`` with the changed rows of each message that carries them, before
        the revisions are delivered; return a remover. The base carries none, so it registers
        nothing: a receiver rebuilds what another process changed."""
        return _nothing

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

    def snapshot(self) -> BusSnapshot:
        """Its state and counters, without I/O."""
        return BusSnapshot(name=self.name, kind=type(self).__name__)


__all__ = [
    "Bus",
    "BusSnapshot",
    "ChangesListener",
    "ConnectCallback",
    "Listener",
    "RemoteBusSnapshot",
]
