"""Conformance suites: the behaviour every adapter of a port must have, as pytest test classes.

Each suite is a base class of async tests with an abstract fixture your subclass provides::

    from freshkeep.testing.conformance import SharedStoreSuite

    class TestMyStore(SharedStoreSuite):
        @pytest.fixture
        async def store(self):
            s = MyStore(...)
            yield s
            await s.aclose()

The suites need ``pytest`` and ``pytest-asyncio`` (``asyncio_mode = "auto"``); importing
:mod:`freshkeep.testing` alone needs neither. They check behaviour, not only that methods
exist: compare-and-set never replaces a newer entry, a lock is exclusive and its lease
expires, each subscriber gets a message once, enqueues are deduplicated, and so on.

- :class:`SharedStoreSuite`: fixture ``store`` (a :class:`~freshkeep.ports.SharedStore`),
  optionally ``plant`` (a :data:`Plant` writing raw bytes under a key, for the cases of values
  the store cannot read);
- :class:`BusSuite`: ``buses``, two started buses on one channel (:class:`~freshkeep.ports.Bus`);
- :class:`LockSuite`: ``lock``, optionally ``other`` (:class:`~freshkeep.ports.Lock`);
- :class:`StateStoreSuite`: ``state_store`` (:class:`~freshkeep.ports.StateStore`);
- :class:`ProcessingStateStoreSuite`: ``processing_store``
  (:class:`~freshkeep.ports.ProcessingStateStore`);
- :class:`ObjectStorageSuite`: ``storage`` (:class:`~freshkeep.ports.ObjectStorage`);
- :class:`JobQueueSuite`: ``make_queue``, optionally ``transaction``
  (:class:`~freshkeep.ports.JobQueue`).
"""

from __future__ import annotations

from freshkeep.testing.conformance._bus import BusSuite as BusSuite
from freshkeep.testing.conformance._jobs import JobQueueSuite as JobQueueSuite
from freshkeep.testing.conformance._lock import LockSuite as LockSuite
from freshkeep.testing.conformance._state import (
    ProcessingStateStoreSuite as ProcessingStateStoreSuite,
)
from freshkeep.testing.conformance._state import StateStoreSuite as StateStoreSuite
from freshkeep.testing.conformance._storage import ObjectStorageSuite as ObjectStorageSuite
from freshkeep.testing.conformance._store import Plant as Plant
from freshkeep.testing.conformance._store import SharedStoreSuite as SharedStoreSuite

__all__ = [
    "BusSuite",
    "JobQueueSuite",
    "LockSuite",
    "ObjectStorageSuite",
    "Plant",
    "ProcessingStateStoreSuite",
    "SharedStoreSuite",
    "StateStoreSuite",
]
