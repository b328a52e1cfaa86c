"""The ports: what freshkeep's shapes talk to, and what every adapter implements.

Each port is a nominal abstract base class. Its optional capabilities default to "not
supported" (dogpile.cache's ``get_mutex() -> None``), so a caller calls them directly and gets
a neutral answer from an adapter that lacks them:

==========================  ============================================  ==================
port                        adapters                                      optional (default)
==========================  ============================================  ==================
:class:`SharedStore`        ``RedisStore``, ``MemorySharedStore``         ``lock() -> None``
:class:`Bus`                ``LocalBus``, ``RedisBus``, ``PostgresBus``   ``start() -> True``,
                                                                          ``on_connect``
:class:`RevisionSource`     ``SQLAlchemyRevisions``, ``MemoryRevisions``  ``bump() -> None``
:class:`Lock`               ``LocalLock``, ``RedisLock``, ``PostgresLock``  ``hold()`` helper
:class:`StateStore`         memory, SQL, Redis                            —
:class:`ProcessingStateStore`  memory, SQL                                —
:class:`ObjectStorage`      ``FsspecStorage`` (local directory, S3)       ``presign() -> None``
:class:`JobQueue`           ``SQLJobQueue``, ``ProcrastinateJobQueue``    —
==========================  ============================================  ==================

Every port has a conformance suite in :mod:`freshkeep.testing.conformance`, which each
adapter's tests (and a user's own backend) subclass. Ports import only :mod:`freshkeep.core`
and :mod:`freshkeep.exceptions`.
"""

from __future__ import annotations

from freshkeep.ports._bus import Bus as Bus
from freshkeep.ports._bus import ConnectCallback as ConnectCallback
from freshkeep.ports._bus import Listener as Listener
from freshkeep.ports._jobs import JobQueue as JobQueue
from freshkeep.ports._lock import Lock as Lock
from freshkeep.ports._revisions import RevisionSource as RevisionSource
from freshkeep.ports._state import ItemState as ItemState
from freshkeep.ports._state import ProcessingStateStore as ProcessingStateStore
from freshkeep.ports._state import StateStore as StateStore
from freshkeep.ports._storage import ObjectStorage as ObjectStorage
from freshkeep.ports._storage import StoredObject as StoredObject
from freshkeep.ports._store import SharedStore as SharedStore

__all__ = [
    "Bus",
    "ConnectCallback",
    "ItemState",
    "JobQueue",
    "Listener",
    "Lock",
    "ObjectStorage",
    "ProcessingStateStore",
    "RevisionSource",
    "SharedStore",
    "StateStore",
    "StoredObject",
]
