"""The ports: what freshkeep's shapes talk to, and what every adapter implements.

Each port is a nominal abstract base class. Its optional capabilities default to "not
supported" (dogpile.cache's ``get_mutex() -> None``), so a caller calls them directly and gets
a neutral answer from an adapter that lacks them:

- :class:`SharedStore`: ``RedisStore``, ``MemorySharedStore``; optional ``lock() -> None``.
- :class:`Bus`: ``LocalBus``, ``RedisBus``, ``PostgresBus``; optional ``start() -> True``,
  ``on_connect`` / ``on_disconnect`` (register nothing), ``aclose``.
- :class:`RevisionSource`: ``SQLAlchemyRevisions``, ``MemoryRevisions``; optional
  ``bump() -> None``.
- :class:`Lock`: ``LocalLock``, ``RedisLock``, ``PostgresLock``; the ``hold()`` helper.
- :class:`StateStore`: memory, SQL and Redis notifier state stores.
- :class:`ProcessingStateStore` (records :class:`ItemState`): memory and SQL.
- :class:`ObjectStorage`: ``FsspecStorage`` (a local directory, S3); optional
  ``presign() -> None``, ``local_path() -> None``.
- :class:`JobQueue`: ``SQLJobQueue``, ``ProcrastinateJobQueue``; the base holds what every
  queue shares (task registry, enqueue checks, counters).

Every port has a conformance suite in :mod:`freshkeep.testing.conformance`, which each
adapter's tests (and a user's own backend) subclass. Ports import only :mod:`freshkeep.core`
and :mod:`freshkeep.exceptions`.
"""

from __future__ import annotations

from freshkeep.ports._bus import Bus as Bus
from freshkeep.ports._bus import BusSnapshot as BusSnapshot
from freshkeep.ports._bus import ChangesListener as ChangesListener
from freshkeep.ports._bus import ConnectCallback as ConnectCallback
from freshkeep.ports._bus import Listener as Listener
from freshkeep.ports._bus import RemoteBusSnapshot as RemoteBusSnapshot
from freshkeep.ports._jobs import DedupScope as DedupScope
from freshkeep.ports._jobs import EnqueueResult as EnqueueResult
from freshkeep.ports._jobs import JobContext as JobContext
from freshkeep.ports._jobs import JobQueue as JobQueue
from freshkeep.ports._jobs import LockFunc as LockFunc
from freshkeep.ports._jobs import PeriodicSpec as PeriodicSpec
from freshkeep.ports._jobs import TaskFunc as TaskFunc
from freshkeep.ports._jobs import TaskSpec as TaskSpec
from freshkeep.ports._lock import Lock as Lock
from freshkeep.ports._revisions import RevisionSource as RevisionSource
from freshkeep.ports._state import ItemState as ItemState
from freshkeep.ports._state import ProcessingStateStore as ProcessingStateStore
from freshkeep.ports._state import StateStore as StateStore
from freshkeep.ports._storage import ObjectStorage as ObjectStorage
from freshkeep.ports._storage import StoredObject as StoredObject
from freshkeep.ports._storage import content_id as content_id
from freshkeep.ports._store import SharedStore as SharedStore
from freshkeep.ports._store import SharedStoreSnapshot as SharedStoreSnapshot

__all__ = [
    "Bus",
    "BusSnapshot",
    "ChangesListener",
    "ConnectCallback",
    "DedupScope",
    "EnqueueResult",
    "ItemState",
    "JobContext",
    "JobQueue",
    "Listener",
    "Lock",
    "LockFunc",
    "ObjectStorage",
    "PeriodicSpec",
    "ProcessingStateStore",
    "RemoteBusSnapshot",
    "RevisionSource",
    "SharedStore",
    "SharedStoreSnapshot",
    "StateStore",
    "StoredObject",
    "TaskFunc",
    "TaskSpec",
    "content_id",
]
