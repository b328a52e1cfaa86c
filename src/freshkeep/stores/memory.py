"""The in-process store: an LRU bounded by entry count and by bytes.

Recency is kept two ways: :meth:`MemoryStore.get` moves a key to the end (exact LRU), and the
hit path, which must not pay for that, only increments ``entry.hits``; eviction gives an entry
hit since it was last considered a second chance (CLOCK), so hot entries stay.

It is every process's L1. Its operations are synchronous (a hit must not leave the process, nor
even yield to the event loop) and it applies compare-and-set on fingerprints: an entry is never
replaced by one built from older revisions.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from freshkeep.core.entry import Entry
from freshkeep.exceptions import ConfigurationError


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryStoreSnapshot:
    """The size and counters of a :class:`MemoryStore` (``store`` of the keeper's snapshot)."""

    entries: int
    bytes: int
    evictions: int
    rejected: int
    """Puts refused because the stored entry was built from newer revisions."""


class MemoryStore:
    """An LRU of :class:`~freshkeep.core.entry.Entry`, bounded by ``max_entries`` and ``max_bytes``.

    Several keepers may share one instance (as several processes share a Redis store).
    """

    __slots__ = (
        "_data",
        "_retired_hits",
        "bytes",
        "evictions",
        "max_bytes",
        "max_entries",
        "rejected",
    )

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_entries < 1:
            raise ConfigurationError(f"max_entries must be >= 1, not {max_entries!r}")
        if max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be >= 1, not {max_bytes!r}")
        self._data: OrderedDict[Hashable, Entry] = OrderedDict()
        self._retired_hits: dict[str, int] = {}
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self.rejected = 0
        """Puts refused because the stored entry was built from newer revisions."""

    def __len__(self) -> int:
        return len(self._data)

    def snapshot(self) -> MemoryStoreSnapshot:
        """Its size and counters now."""
        return MemoryStoreSnapshot(
            entries=len(self._data),
            bytes=self.bytes,
            evictions=self.evictions,
            rejected=self.rejected,
        )

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable) -> Entry | None:
        """Return the entry for ``key`` and mark it recently used."""
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def hot_lookup(self) -> Callable[[Hashable], Entry | None]:
        """The bare dict lookup, for a hit path that calls it directly. Such a caller marks a
        hit by incrementing ``entry.hits`` instead of moving the key: eviction gives an entry
        hit since it was last considered a second chance (the CLOCK approximation of LRU)."""
        return self._data.get

    def hits_of(self, view: str) -> int:
        """Hits counted on the entries of ``view``, those evicted or replaced included."""
        live = sum(e.hits for e in self._data.values() if e.view == view)
        return live + self._retired_hits.get(view, 0)

    def hits_by_view(self) -> dict[str, int]:
        """:meth:`hits_of` for every view at once, in one pass over the entries."""
        out = dict(self._retired_hits)
        for e in self._data.values():
            if e.hits:
                out[e.view] = out.get(e.view, 0) + e.hits
        return out

    def peek(self, key: Hashable) -> Entry | None:
        """Return the entry for ``key`` without touching its recency."""
        return self._data.get(key)

    def put(self, key: Hashable, entry: Entry) -> Entry:
        """Store ``entry`` unless the stored one is newer; return the entry now stored.

        An entry larger than ``max_bytes`` is not stored (the current one is dropped, since it
        is older) and ``entry`` is returned as it is.
        """
        old = self._data.get(key)
        if old is not None:
            if old is entry:
                self._data.move_to_end(key)
                return old
            if entry.is_older_than(old):
                self.rejected += 1
                return old
            self._remove(key, old)
        size = entry.size
        if size > self.max_bytes:
            return entry
        self._data[key] = entry
        self.bytes += size
        data = self._data
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            k, e = data.popitem(last=False)
            if e.hits != e.seen_hits and e is not entry:
                e.seen_hits = e.hits  # hit since last considered: a second chance
                data[k] = e
                continue
            self.bytes -= e.size
            self.evictions += 1
            self._retire(e)
        return entry

    def delete(self, key: Hashable) -> bool:
        """Remove ``key``; return whether it was there."""
        old = self._data.get(key)
        if old is None:
            return False
        self._remove(key, old)
        return True

    def clear(self) -> None:
        """Remove every entry."""
        for e in self._data.values():
            self._retire(e)
        self._data.clear()
        self.bytes = 0

    def _remove(self, key: Hashable, entry: Entry) -> None:
        del self._data[key]
        self.bytes -= entry.size
        self._retire(entry)

    def _retire(self, entry: Entry) -> None:
        # An entry out of the store never passes a hit check again, so a reader holding it
        # (``View.read``) comes back to the store.
        entry.epoch = -1
        if entry.hits:
            self._retired_hits[entry.view] = self._retired_hits.get(entry.view, 0) + entry.hits
