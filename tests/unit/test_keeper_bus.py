"""While a network bus is down, nothing is pushed: every read probes, until it is back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from freshkeep import BuildContext, Keeper, LocalBus, Revision
from freshkeep.testing import MemoryRevisions


class FlakyBus(LocalBus):
    """A local bus with the connect/disconnect callbacks of a network bus."""

    def __init__(self, connected: bool) -> None:
        super().__init__()
        self.connected = connected
        self.up: list[Callable[[], Any]] = []
        self.down: list[Callable[[], None]] = []

    async def start(self) -> bool:
        if self.connected:
            await self.connect()
        return self.connected

    def on_connect(self, cb: Callable[[], Any]) -> Callable[[], None]:
        self.up.append(cb)
        return lambda: self.up.remove(cb)

    def on_disconnect(self, cb: Callable[[], None]) -> Callable[[], None]:
        self.down.append(cb)
        return lambda: self.down.remove(cb)

    async def connect(self) -> None:
        self.connected = True
        for cb in self.up:
            await cb()

    def cut(self) -> None:
        self.connected = False
        for cb in self.down:
            cb()

    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        if self.connected:
            await super().publish(revisions, origin=origin)


async def build(ctx: BuildContext) -> int:
    return 1


async def test_reads_probe_while_the_bus_is_down_and_resync_when_it_is_back() -> None:
    revs = MemoryRevisions()
    bus = FlakyBus(connected=True)
    keeper = Keeper(revs, bus=bus, probe="interval", resync_interval=3600)
    view = keeper.view("v", build, sources=["t:a"])
    await keeper.start()
    await view.get()
    reads = revs.reads
    for _ in range(3):
        assert (await view.get()).status == "hit"
    assert revs.reads == reads  # pushed revisions: hits read nothing
    bus.cut()
    assert keeper.snapshot().bus_down is True
    revs.revisions["t:a"] = 1  # written elsewhere; the message is lost with the bus
    assert (await view.get()).status == "miss"  # read at once, not an hour later
    assert revs.reads > reads
    await bus.connect()
    reads = revs.reads
    assert (await view.get()).status == "hit" and revs.reads == reads
    await keeper.aclose()


async def test_a_bus_that_cannot_connect_at_start_means_probing() -> None:
    revs = MemoryRevisions()
    keeper = Keeper(revs, bus=FlakyBus(connected=False), probe="interval", resync_interval=3600)
    view = keeper.view("v", build, sources=["t:a"])
    await keeper.start()
    await view.get()
    revs.revisions["t:a"] = 1
    assert (await view.get()).status == "miss"
    await keeper.aclose()
