"""Remote values: copies of data a service does not own, refreshed by TTL, stale on error.

A :class:`Remote` (created by :meth:`freshkeep.Keeper.remote`) keeps one value per key (per
project, per currency …) fetched by any callable, for example with httpx. Its TTL is its
revision: within the TTL a read is served from memory; after it, the value is fetched again, so
a new upstream value is seen without a restart. ``ttl=0`` keeps a value for the process
lifetime (until :meth:`Remote.reload`).

A failed fetch never replaces a value: the last fetched value is served (``error-stale``), the
failure is counted, and the key backs off (doubling, capped) instead of retrying on every read.
Only when nothing was ever fetched is the ``fallback`` served, or, without one,
:class:`~freshkeep.exceptions.RemoteUnavailableError` raised. Lookups derived from a value
(``derive``) are computed from the same fetch and kept in the same record, so they never
disagree with it or with each other.

A value that is a mapping of items can be completed as it is fetched: ``defaults`` backfills
the keys a fetch left out and the fields an item lacks, ``fallback_item(key, item)`` fills in
what an item lacks from the item itself. :meth:`Remote.cached` answers from memory only.
"""

from __future__ import annotations

from freshkeep.remote._complete import FallbackItem as FallbackItem
from freshkeep.remote._config import RemoteConfig as RemoteConfig
from freshkeep.remote._config import env_prefix as env_prefix
from freshkeep.remote._remote import Remote as Remote
from freshkeep.remote._types import NO_FALLBACK as NO_FALLBACK
from freshkeep.remote._types import Derive as Derive
from freshkeep.remote._types import Fetch as Fetch
from freshkeep.remote._types import RemoteKeySnapshot as RemoteKeySnapshot
from freshkeep.remote._types import RemoteRead as RemoteRead
from freshkeep.remote._types import RemoteRecord as RemoteRecord
from freshkeep.remote._types import RemoteSnapshot as RemoteSnapshot
from freshkeep.remote._types import RemoteStats as RemoteStats
from freshkeep.remote._types import RemoteStatus as RemoteStatus

__all__ = [
    "NO_FALLBACK",
    "Derive",
    "FallbackItem",
    "Fetch",
    "Remote",
    "RemoteConfig",
    "RemoteKeySnapshot",
    "RemoteRead",
    "RemoteRecord",
    "RemoteSnapshot",
    "RemoteStats",
    "RemoteStatus",
    "env_prefix",
]
