"""The memory store: LRU by count and bytes, and compare-and-set on fingerprints."""

from __future__ import annotations

import pytest

from freshkeep import ConfigurationError, MemoryStore
from freshkeep.core.entry import Entry, SectionEntry


def entry(rev: int, body: bytes = b'{"x":1}', key: object = None) -> Entry:
    return Entry("v", key, {"s": SectionEntry(body, (rev,), 0.0, 0.0)}, {"s": ("t",)})


def test_lru_evicts_least_recently_used_by_count() -> None:
    store = MemoryStore(max_entries=2)
    store.put("a", entry(1))
    store.put("b", entry(1))
    assert store.get("a") is not None  # a is now the most recent
    store.put("c", entry(1))
    assert "b" not in store and "a" in store and "c" in store
    assert store.evictions == 1


def test_lru_is_bounded_by_bytes() -> None:
    store = MemoryStore(max_bytes=25)
    store.put("a", entry(1, b'{"x":"0123456789"}'))
    store.put("b", entry(1, b'{"x":"0123456789"}'))
    assert len(store) == 1 and "b" in store
    assert store.bytes == entry(1, b'{"x":"0123456789"}').size


def test_an_entry_larger_than_the_store_is_not_kept() -> None:
    store = MemoryStore(max_bytes=5)
    e = entry(1, b'{"x":"too big"}')
    assert store.put("a", e) is e
    assert len(store) == 0 and store.bytes == 0


def test_an_older_entry_never_replaces_a_newer_one() -> None:
    store = MemoryStore()
    newer = entry(5)
    store.put("a", newer)
    assert store.put("a", entry(4)) is newer
    assert store.get("a") is newer and store.rejected == 1
    newest = entry(6)
    assert store.put("a", newest) is newest


def test_delete_and_clear_keep_byte_count() -> None:
    store = MemoryStore()
    store.put("a", entry(1))
    store.put("b", entry(1))
    assert store.delete("a") and not store.delete("a")
    assert store.bytes == entry(1).size
    store.clear()
    assert len(store) == 0 and store.bytes == 0


@pytest.mark.parametrize("kw", [{"max_entries": 0}, {"max_bytes": 0}])
def test_bounds_must_be_positive(kw: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        MemoryStore(**kw)


def test_hit_path_hits_give_a_second_chance_at_eviction() -> None:
    store = MemoryStore(max_entries=2)
    lookup = store.hot_lookup()
    store.put("a", entry(1))
    store.put("b", entry(1))
    hot = lookup("a")
    assert hot is not None
    hot.hits += 1  # what View.get does on a hit instead of moving the key
    store.put("c", entry(1))
    assert "a" in store and "b" not in store and "c" in store
    store.put("d", entry(1))  # a went behind c when it got its second chance
    assert "c" not in store and "a" in store
    store.put("e", entry(1))  # a's hit was used up: now it is the oldest
    assert "a" not in store and store.hits_of("v") == 1


async def test_view_stats_count_hits_on_entries() -> None:
    from freshkeep import BuildContext, Keeper

    async def build(ctx: BuildContext) -> int:
        return 1

    keeper = Keeper()
    view = keeper.view("v", build, sources=["t"])
    for _ in range(5):
        await view.get()
    view.invalidate()
    await view.get()
    assert view.snapshot().reads == {"miss": 2, "hit": 4}
