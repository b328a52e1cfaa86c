"""The :class:`~freshkeep.ports.Bus` suite."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping

import pytest

from freshkeep.core.revision import Revision
from freshkeep.ports import Bus


class _Inbox:
    """A listener that counts messages by their ``marker`` revision."""

    def __init__(self) -> None:
        self.seen: Counter[object] = Counter()
        self.origins: list[str] = []
        self.arrived = asyncio.Event()

    def __call__(self, revisions: Mapping[str, Revision], origin: str) -> None:
        self.seen[revisions.get("marker")] += 1
        self.origins.append(origin)
        self.arrived.set()

    async def wait_for(self, marker: object, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.seen[marker]:
                self.arrived.clear()
                await self.arrived.wait()


class BusSuite:
    """Provide the ``buses`` fixture: two started buses on one channel, as two processes
    would have them (an in-process bus may yield the same bus twice).

    Pub/sub is at-most-once: the suite checks that every subscriber gets each message once
    (a later message, on the same channel from the same publisher, fences the wait)."""

    @pytest.fixture
    async def buses(self) -> AsyncIterator[tuple[Bus, Bus]]:
        raise NotImplementedError("a BusSuite subclass provides the `buses` fixture")
        yield  # pragma: no cover

    async def test_it_is_a_bus_with_its_optional_capabilities(self, buses: tuple[Bus, Bus]) -> None:
        a, _ = buses
        assert isinstance(a, Bus)
        assert await a.start() is True  # started already: connected
        remove = a.on_connect(lambda: None)
        remove()
        a.on_disconnect(lambda: None)()

    async def test_every_subscriber_gets_each_message_once(self, buses: tuple[Bus, Bus]) -> None:
        a, b = buses
        inboxes = [_Inbox() for _ in range(3)]
        removers = [a.subscribe(inboxes[0]), b.subscribe(inboxes[1]), b.subscribe(inboxes[2])]
        try:
            origin = uuid.uuid4().hex
            await a.publish({"table:x": 7, "marker": 1}, origin=origin)
            await a.publish({"marker": 2}, origin=origin)
            for inbox in inboxes:
                await inbox.wait_for(2)
                assert inbox.seen[1] == 1 and inbox.seen[2] == 1
                assert set(inbox.origins) == {origin}
        finally:
            for remove in removers:
                remove()

    async def test_revisions_arrive_as_published(self, buses: tuple[Bus, Bus]) -> None:
        a, b = buses
        got: list[dict[str, Revision]] = []
        inbox = _Inbox()

        def listener(revisions: Mapping[str, Revision], origin: str) -> None:
            got.append(dict(revisions))
            inbox(revisions, origin)

        remove = b.subscribe(listener)
        try:
            sent: dict[str, Revision] = {
                "table:a": 3,
                "table:b": "2024-01-01T00:00:00",
                "marker": 1,
            }
            await a.publish(sent, origin="o")
            await inbox.wait_for(1)
            assert got == [sent]
        finally:
            remove()

    async def test_an_unsubscribed_listener_gets_nothing(self, buses: tuple[Bus, Bus]) -> None:
        a, b = buses
        gone, fence = _Inbox(), _Inbox()
        remove_gone = b.subscribe(gone)
        remove_fence = b.subscribe(fence)
        remove_gone()
        remove_gone()  # twice is harmless
        try:
            await a.publish({"marker": 1}, origin="o")
            await fence.wait_for(1)
            assert not gone.seen
        finally:
            remove_fence()

    async def test_publish_nowait_from_synchronous_code(self, buses: tuple[Bus, Bus]) -> None:
        a, b = buses
        inbox = _Inbox()
        remove = b.subscribe(inbox)
        try:
            a.publish_nowait({"marker": 1}, origin="sync")
            await a.publish({"marker": 2}, origin="sync")
            await inbox.wait_for(1)
            await inbox.wait_for(2)
            assert inbox.seen[1] == 1
        finally:
            remove()

    async def test_a_failing_listener_does_not_stop_the_others(
        self, buses: tuple[Bus, Bus]
    ) -> None:
        a, b = buses

        def broken(revisions: Mapping[str, Revision], origin: str) -> None:
            raise RuntimeError("listener failed")

        inbox = _Inbox()
        removers = [b.subscribe(broken), b.subscribe(inbox)]
        try:
            await a.publish({"marker": 1}, origin="o")
            await inbox.wait_for(1)
        finally:
            for remove in removers:
                remove()
