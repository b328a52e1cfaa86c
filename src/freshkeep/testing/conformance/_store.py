"""The :class:`~freshkeep.ports.SharedStore` suite."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from freshkeep.core.codec import encode_entry
from freshkeep.core.entry import Entry, SectionEntry
from freshkeep.ports import Lock, SharedStore, SharedStoreSnapshot

Plant = Callable[[str, bytes], Awaitable[object]]
"""Writes raw bytes under a store key, as anyone who can write to the store's server can."""


def make_entry(
    revisions: dict[str, Any], key: object = ("u1", 42), *, body: bytes = b'{"n":1}'
) -> Entry:
    """An entry of the view ``summary`` built from ``revisions``."""
    sources = tuple(sorted(revisions))
    part = SectionEntry(body, tuple(revisions[s] for s in sources), time.time(), time.monotonic())
    return Entry("summary", key, {"main": part}, {"main": sources})


_HUGE = 10**12
_FORGER = b"not the store's secret"


def _forged(*, secret: bytes | None) -> tuple[bytes, Entry]:
    entry = make_entry({"table:a": _HUGE}, body=b'{"forged":true}')
    return encode_entry(entry, secret=secret), entry


def _wrong_etag(secret: bytes | None) -> bytes:
    data, entry = _forged(secret=secret)
    digest = entry.etag[3:-1].encode()  # W/"<hex>"
    return data.replace(digest, b"0" * len(digest))


FORGERIES: dict[str, Callable[[], bytes]] = {
    "not-an-entry": lambda: b"\x80\x04\x95 not an entry",
    "unsigned-wrong-etag": lambda: _wrong_etag(None),
    "foreign-signature-wrong-etag": lambda: _wrong_etag(_FORGER),
    "foreign-signature-truncated": lambda: _forged(secret=_FORGER)[0][:-5],
}
"""Values no store can read, whatever its secret (or none): each claims revisions far newer
than any genuine entry's, except the first, which is not an entry at all."""


class SharedStoreSuite:
    """Provide the ``store`` fixture: an empty :class:`~freshkeep.ports.SharedStore`; and,
    optionally, ``plant``: a :data:`Plant` writing raw bytes under a key of that store (the
    tests that need it are skipped without it)."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[SharedStore]:
        raise NotImplementedError("a SharedStoreSuite subclass provides the `store` fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def plant(self) -> Plant | None:
        return None

    @staticmethod
    def key(store: SharedStore, entry: Entry) -> str:
        return store.key_for(entry.view, entry.key, version=entry.version)

    async def test_it_is_a_shared_store(self, store: SharedStore) -> None:
        assert isinstance(store, SharedStore)
        snap = store.snapshot()
        assert isinstance(snap, SharedStoreSnapshot) and snap.reachable

    async def test_a_miss_then_a_round_trip(self, store: SharedStore) -> None:
        entry = make_entry({"table:a": 3, "table:b": "w1"})
        key = self.key(store, entry)
        assert await store.get(key) is None
        assert await store.put(key, entry) is True
        back = await store.get(key)
        assert back is not None
        assert (back.view, back.key, back.body, back.vector, back.etag, back.revision) == (
            entry.view,
            entry.key,
            entry.body,
            entry.vector,
            entry.etag,
            entry.revision,
        )

    async def test_keys_are_stable_and_distinct(self, store: SharedStore) -> None:
        a = store.key_for("summary", ("u1", 42))
        assert a == store.key_for("summary", ("u1", 42))
        others = {
            store.key_for("summary", ("u1", 43)),
            store.key_for("other", ("u1", 42)),
            store.key_for("summary", ("u1", 42), version="2"),
        }
        assert a not in others and len(others) == 3

    async def test_put_never_replaces_an_entry_built_from_newer_revisions(
        self, store: SharedStore
    ) -> None:
        """Design rule 3: compare-and-set on the revision vector."""
        newer = make_entry({"table:a": 5, "table:b": 1}, body=b'{"n":5}')
        key = self.key(store, newer)
        assert await store.put(key, newer) is True
        older = make_entry({"table:a": 4, "table:b": 9}, body=b'{"n":4}')
        assert await store.put(key, older) is False
        back = await store.get(key)
        assert back is not None and back.body == b'{"n":5}'
        newest = make_entry({"table:a": 6, "table:b": 1}, body=b'{"n":6}')
        assert await store.put(key, newest) is True
        back = await store.get(key)
        assert back is not None and back.body == b'{"n":6}'

    async def test_an_equal_or_unordered_revision_replaces(self, store: SharedStore) -> None:
        first = make_entry({"table:a": 5, "table:w": "w1"}, body=b"1")
        key = self.key(store, first)
        assert await store.put(key, first)
        assert await store.put(key, make_entry({"table:a": 5, "table:w": "w2"}, body=b"2"))
        back = await store.get(key)
        assert back is not None and back.vector["table:w"] == "w2"

    @pytest.mark.parametrize("forgery", sorted(FORGERIES))
    async def test_a_put_replaces_a_value_the_store_cannot_read(
        self, store: SharedStore, plant: Plant | None, forgery: str
    ) -> None:
        """Only an entry ``get`` would serve can refuse a put: a value it cannot read, whatever
        revisions its header claims, is replaced and counted (``poisoned``)."""
        if plant is None:
            pytest.skip("no `plant` fixture: raw values cannot be written to this store")
        genuine = make_entry({"table:a": 1}, body=b'{"n":1}')
        key = self.key(store, genuine)
        await plant(key, FORGERIES[forgery]())
        before = store.snapshot().poisoned
        assert await store.put(key, genuine) is True
        snap = store.snapshot()
        assert snap.poisoned == before + 1, snap
        assert snap.last_poisoned is not None and key in snap.last_poisoned
        assert snap.last_poisoned_at is not None
        back = await store.get(key)
        assert back is not None and (back.body, back.vector) == (b'{"n":1}', {"table:a": 1})
        # What replaced it is a genuine entry: it refuses an older one (design rule 3).
        assert await store.put(key, make_entry({"table:a": 0}, body=b'{"n":0}')) is False

    async def test_delete(self, store: SharedStore) -> None:
        entry = make_entry({"table:a": 1})
        key = self.key(store, entry)
        assert await store.delete(key) is False
        await store.put(key, entry)
        assert await store.delete(key) is True
        assert await store.get(key) is None

    async def test_the_optional_lock_is_a_lock_or_none(self, store: SharedStore) -> None:
        lock = store.lock()
        if lock is None:
            return
        assert isinstance(lock, Lock)
        token = await lock.acquire("conformance", 10.0)
        assert token is not None
        try:
            assert await lock.acquire("conformance", 10.0) is None
        finally:
            assert await lock.release("conformance", token)
