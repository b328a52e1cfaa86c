"""A shared store in this process: what a Redis store does, in a dict (tests, and several
keepers in one process standing for several instances).

Entries are kept encoded (:mod:`freshkeep.core.codec`), as a server keeps them, so a keeper
never shares an object with another; ``put`` is compare-and-set on the revision vector
(design rule 3), and only an entry ``get`` would serve can refuse it: a stored value that
cannot be read (tampered, signed with another key, stored under another key) is replaced and
counted as ``poisoned``; :meth:`MemorySharedStore.lock` is a
:class:`~freshkeep.stores.local_lock.LocalLock`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.codec import decode_entry, encode_entry, identity_json
from freshkeep.core.entry import Entry
from freshkeep.exceptions import ConfigurationError, CorruptEntryError, EncodeError
from freshkeep.ports import SharedStore, SharedStoreSnapshot
from freshkeep.stores.local_lock import LocalLock


@dataclass(frozen=True, slots=True, kw_only=True)
class MemorySharedStoreSnapshot(SharedStoreSnapshot):
    """A :class:`MemorySharedStore`'s counters (it is always reachable)."""

    keys: int
    hits: int
    misses: int
    stored: int
    rejected: int
    corrupt: int


class MemorySharedStore(SharedStore):
    """A :class:`~freshkeep.ports.SharedStore` in a dict; ``secret`` signs entries (HMAC)."""

    def __init__(
        self,
        *,
        prefix: str = "freshkeep:",
        secret: bytes | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.prefix = prefix
        self.secret = secret
        self.clock = clock
        self.data: dict[str, bytes] = {}
        self.counters = {
            "hits": 0,
            "misses": 0,
            "stored": 0,
            "rejected": 0,
            "corrupt": 0,
            "poisoned": 0,
        }
        self.last_poisoned: str | None = None
        self.last_poisoned_at: float | None = None
        self._lock = LocalLock(clock=clock)

    def key_for(self, view: str, identity: Hashable, *, version: str = "") -> str:
        """``<prefix><view>:<hex digest>`` of the version and the identity's JSON."""
        h = hashlib.blake2b(digest_size=16)
        h.update(version.encode())
        h.update(b"\x00")
        h.update(identity_json(identity))
        return f"{self.prefix}{view}:{h.hexdigest()}"

    async def get(self, key: str) -> Entry | None:
        """The entry under ``key``; ``None`` when absent or unreadable."""
        data = self.data.get(key)
        if data is None:
            self.counters["misses"] += 1
            return None
        try:
            entry = self._read(key, data)
        except (CorruptEntryError, EncodeError):
            self.counters["corrupt"] += 1
            return None
        self.counters["hits"] += 1
        return entry

    async def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` unless the stored one is an entry ``get`` serves built from newer
        revisions; a value it cannot read is replaced (counted as ``poisoned``)."""
        if self.key_for(entry.view, entry.key, version=entry.version) != key:
            raise ConfigurationError(
                f"entry of view {entry.view!r} put under {key!r}, not under its key_for()"
            )
        try:
            data = encode_entry(entry, secret=self.secret)
        except EncodeError:
            return False
        old = self.data.get(key)
        if old is not None:
            try:
                stored = self._read(key, old)
            except (CorruptEntryError, EncodeError) as exc:
                self.counters["poisoned"] += 1
                self.last_poisoned = f"{key}: {exc}"
                self.last_poisoned_at = self.clock.time()
            else:
                if entry.is_older_than(stored):
                    self.counters["rejected"] += 1
                    return False
        self.data[key] = data
        self.counters["stored"] += 1
        return True

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it was there."""
        return self.data.pop(key, None) is not None

    def snapshot(self) -> MemorySharedStoreSnapshot:
        """Its counters (always reachable)."""
        c = self.counters
        return MemorySharedStoreSnapshot(
            name=self.name,
            keys=len(self.data),
            stored=c["stored"],
            rejected=c["rejected"],
            hits=c["hits"],
            misses=c["misses"],
            corrupt=c["corrupt"],
            poisoned=c["poisoned"],
            last_poisoned=self.last_poisoned,
            last_poisoned_at=self.last_poisoned_at,
        )

    def _read(self, key: str, data: bytes) -> Entry:
        entry = decode_entry(data, secret=self.secret, clock=self.clock)
        if self.key_for(entry.view, entry.key, version=entry.version) != key:
            raise CorruptEntryError("entry is stored under another key than its own")
        return entry

    def lock(self) -> LocalLock:
        """The lock of this store's "instances" (one per store)."""
        return self._lock


__all__ = ["MemorySharedStore", "MemorySharedStoreSnapshot"]
