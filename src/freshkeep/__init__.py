"""freshkeep: keep derived data fresh in async Python services, and know when it is not.

The names below are the public API. Integrations (SQLAlchemy, Starlette/FastAPI, the CLI) live in
:mod:`freshkeep.integrations` and import their optional dependencies only when imported.
"""

from __future__ import annotations

from freshkeep.buses.local import LocalBus as LocalBus
from freshkeep.cached import Cached as Cached
from freshkeep.core.change_wire import CommitChanges as CommitChanges
from freshkeep.core.changes import Change as Change
from freshkeep.core.changes import Rebuild as Rebuild
from freshkeep.core.clock import Clock as Clock
from freshkeep.core.clock import SystemClock as SystemClock
from freshkeep.core.component import Component as Component
from freshkeep.core.component import Snapshot as Snapshot
from freshkeep.core.entry import Chunks as Chunks
from freshkeep.core.entry import Entry as Entry
from freshkeep.core.entry import Read as Read
from freshkeep.core.entry import Status as Status
from freshkeep.core.partitions import Partitioned as Partitioned
from freshkeep.core.policy import Policy as Policy
from freshkeep.core.revision import Revision as Revision
from freshkeep.core.revision import RevisionTracker as RevisionTracker
from freshkeep.core.shared_cache import SharedCache as SharedCache
from freshkeep.exceptions import ArtifactBuildError as ArtifactBuildError
from freshkeep.exceptions import BuildError as BuildError
from freshkeep.exceptions import ConfigurationError as ConfigurationError
from freshkeep.exceptions import CorruptEntryError as CorruptEntryError
from freshkeep.exceptions import DuplicateNameError as DuplicateNameError
from freshkeep.exceptions import DuplicateViewError as DuplicateViewError
from freshkeep.exceptions import EncodeError as EncodeError
from freshkeep.exceptions import FreshkeepError as FreshkeepError
from freshkeep.exceptions import InvalidSignatureError as InvalidSignatureError
from freshkeep.exceptions import JobQueueError as JobQueueError
from freshkeep.exceptions import JobQueueTimeout as JobQueueTimeout
from freshkeep.exceptions import LockBusy as LockBusy
from freshkeep.exceptions import MissingDependencyError as MissingDependencyError
from freshkeep.exceptions import PrincipalRequiredError as PrincipalRequiredError
from freshkeep.exceptions import ProcessorBusy as ProcessorBusy
from freshkeep.exceptions import RemoteUnavailableError as RemoteUnavailableError
from freshkeep.exceptions import RevisionSourceError as RevisionSourceError
from freshkeep.exceptions import StoreError as StoreError
from freshkeep.exceptions import UnavailableError as UnavailableError
from freshkeep.exceptions import UnknownProcessorError as UnknownProcessorError
from freshkeep.exceptions import UnknownTaskError as UnknownTaskError
from freshkeep.exceptions import UnknownViewError as UnknownViewError
from freshkeep.health import CheckResult as CheckResult
from freshkeep.health import Health as Health
from freshkeep.health import HealthReport as HealthReport
from freshkeep.jobs import EnqueueResult as EnqueueResult
from freshkeep.jobs import JobContext as JobContext
from freshkeep.jobs import JobQueue as JobQueue
from freshkeep.keeper import Keeper as Keeper
from freshkeep.keeper import KeeperSnapshot as KeeperSnapshot
from freshkeep.notify import ChangeNotifier as ChangeNotifier
from freshkeep.notify import MemoryStateStore as MemoryStateStore
from freshkeep.notify import Notice as Notice
from freshkeep.notify import StateStore as StateStore
from freshkeep.ports import Bus as Bus
from freshkeep.ports import Lock as Lock
from freshkeep.ports import RevisionSource as RevisionSource
from freshkeep.ports import SharedStore as SharedStore
from freshkeep.processing import Item as Item
from freshkeep.processing import Outcome as Outcome
from freshkeep.processing import Pipeline as Pipeline
from freshkeep.processing import ProcessContext as ProcessContext
from freshkeep.processing import Processor as Processor
from freshkeep.processing import RunStats as RunStats
from freshkeep.remote import Remote as Remote
from freshkeep.remote import RemoteRead as RemoteRead
from freshkeep.scheduler import Job as Job
from freshkeep.scheduler import Scheduler as Scheduler
from freshkeep.settings import Settings as Settings
from freshkeep.stores.memory import MemoryStore as MemoryStore
from freshkeep.views import BuildContext as BuildContext
from freshkeep.views import Section as Section
from freshkeep.views import View as View
from freshkeep.views import ViewObserver as ViewObserver
from freshkeep.views import ViewSnapshot as ViewSnapshot

Keeper.health_factory = Health  # the keeper does not import freshkeep.health: wired here

__version__ = "0.1.0"

__all__ = [
    "ArtifactBuildError",
    "BuildContext",
    "BuildError",
    "Bus",
    "Cached",
    "Change",
    "ChangeNotifier",
    "CheckResult",
    "Chunks",
    "Clock",
    "CommitChanges",
    "Component",
    "ConfigurationError",
    "CorruptEntryError",
    "DuplicateNameError",
    "DuplicateViewError",
    "EncodeError",
    "EnqueueResult",
    "Entry",
    "FreshkeepError",
    "Health",
    "HealthReport",
    "InvalidSignatureError",
    "Item",
    "Job",
    "JobContext",
    "JobQueue",
    "JobQueueError",
    "JobQueueTimeout",
    "Keeper",
    "KeeperSnapshot",
    "LocalBus",
    "Lock",
    "LockBusy",
    "MemoryStateStore",
    "MemoryStore",
    "MissingDependencyError",
    "Notice",
    "Outcome",
    "Partitioned",
    "Pipeline",
    "Policy",
    "PrincipalRequiredError",
    "ProcessContext",
    "Processor",
    "ProcessorBusy",
    "Read",
    "Rebuild",
    "Remote",
    "RemoteRead",
    "RemoteUnavailableError",
    "Revision",
    "RevisionSource",
    "RevisionSourceError",
    "RevisionTracker",
    "RunStats",
    "Scheduler",
    "Section",
    "Settings",
    "SharedCache",
    "SharedStore",
    "Snapshot",
    "StateStore",
    "Status",
    "StoreError",
    "SystemClock",
    "UnavailableError",
    "UnknownProcessorError",
    "UnknownTaskError",
    "UnknownViewError",
    "View",
    "ViewObserver",
    "ViewSnapshot",
]
