"""Change notifications without spam: notify on a confirmed change of state, once.

A reconciliation loop observes every subject (a task, a build, a feature flag) on every tick;
:class:`ChangeNotifier` sends only when a subject's state differs from the last state it
*confirmed* (sent successfully), skips terminal states, optionally waits for a new state to be
seen ``confirm`` times in a row (hysteresis for flapping states, with a ``recovered`` notice
when a problem ends), and keeps the confirmed states in a :class:`StateStore` so a restart
does not send everything again.

Stores: :class:`MemoryStateStore` (default), ``freshkeep.notify.sql.
SQLAlchemyStateStore`` (a table in the database) and ``freshkeep.notify.redis.RedisStateStore``.
"""

from __future__ import annotations

from freshkeep.notify._notifier import ChangeNotifier as ChangeNotifier
from freshkeep.notify._notifier import Notice as Notice
from freshkeep.notify._notifier import NoticeKind as NoticeKind
from freshkeep.notify._notifier import NotifierSnapshot as NotifierSnapshot
from freshkeep.notify._notifier import NotifierStats as NotifierStats
from freshkeep.notify._notifier import Outcome as Outcome
from freshkeep.notify._notifier import Send as Send
from freshkeep.notify._store import MemoryStateStore as MemoryStateStore
from freshkeep.notify._store import StateStore as StateStore
from freshkeep.notify._store import canonical as canonical

__all__ = [
    "ChangeNotifier",
    "MemoryStateStore",
    "Notice",
    "NoticeKind",
    "NotifierSnapshot",
    "NotifierStats",
    "Outcome",
    "Send",
    "StateStore",
    "canonical",
]
