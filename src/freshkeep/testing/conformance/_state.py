"""The :class:`~freshkeep.ports.StateStore` and
:class:`~freshkeep.ports.ProcessingStateStore` suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from freshkeep.ports import ItemState, ProcessingStateStore, StateStore


class StateStoreSuite:
    """Provide the ``state_store`` fixture: an empty :class:`~freshkeep.ports.StateStore`."""

    @pytest.fixture
    async def state_store(self) -> AsyncIterator[StateStore]:
        raise NotImplementedError("a StateStoreSuite subclass provides `state_store`")
        yield  # pragma: no cover

    async def test_it_is_a_state_store(self, state_store: StateStore) -> None:
        assert isinstance(state_store, StateStore)

    async def test_set_get_overwrite_delete(self, state_store: StateStore) -> None:
        assert await state_store.get("n", "s") is None
        await state_store.set("n", "s", b'{"a":1}', 1000.0)
        assert await state_store.get("n", "s") == b'{"a":1}'
        await state_store.set("n", "s", b'{"a":2}', 1001.0)
        assert await state_store.get("n", "s") == b'{"a":2}'
        await state_store.delete("n", "s")
        assert await state_store.get("n", "s") is None
        await state_store.delete("n", "never")  # forgetting nothing is not an error

    async def test_notifiers_and_subjects_are_apart(self, state_store: StateStore) -> None:
        await state_store.set("n1", "a", b"1", 1.0)
        await state_store.set("n1", "b", b"2", 1.0)
        await state_store.set("n2", "a", b"3", 1.0)
        assert await state_store.get_all("n1") == {"a": b"1", "b": b"2"}
        assert await state_store.get_all("n2") == {"a": b"3"}
        assert await state_store.get_all("n3") == {}
        await state_store.delete("n1", "a")
        assert await state_store.get("n2", "a") == b"3"

    async def test_bytes_are_kept_exactly(self, state_store: StateStore) -> None:
        raw = '{"name":"é ✓","n":[1,2.5,null]}'.encode()
        await state_store.set("n", "unicode/subject:1", raw, 2.0)
        assert await state_store.get("n", "unicode/subject:1") == raw


def item(processor: str, key: str, **kw: object) -> ItemState:
    fields: dict[str, object] = {"mtime_ns": 1_000, "size": 10, **kw}
    return ItemState(processor, key, **fields)  # type: ignore[arg-type]


class ProcessingStateStoreSuite:
    """Provide the ``processing_store`` fixture: an empty
    :class:`~freshkeep.ports.ProcessingStateStore`."""

    @pytest.fixture
    async def processing_store(self) -> AsyncIterator[ProcessingStateStore]:
        raise NotImplementedError(
            "a ProcessingStateStoreSuite subclass provides `processing_store`"
        )
        yield  # pragma: no cover

    async def test_it_is_a_processing_state_store(
        self, processing_store: ProcessingStateStore
    ) -> None:
        assert isinstance(processing_store, ProcessingStateStore)

    async def test_every_field_round_trips(self, processing_store: ProcessingStateStore) -> None:
        full = item(
            "p",
            "dir/a.jsonl",
            content_hash="ab" * 32,
            processed_at=1_700_000_000.5,
            counts={"lines": 3, "events": 7},
            last_error=None,
            attempts=0,
        )
        failed = item("p", "b.jsonl", last_error="ValueError: bad", attempts=2, retry_at=17.25)
        assert await processing_store.load("p") == {}
        await processing_store.save([full, failed])
        loaded = await processing_store.load("p")
        assert loaded == {"dir/a.jsonl": full, "b.jsonl": failed}
        assert dict(loaded["dir/a.jsonl"].counts) == {"lines": 3, "events": 7}
        assert loaded["b.jsonl"].failed and not loaded["dir/a.jsonl"].failed

    async def test_save_replaces_and_delete_forgets(
        self, processing_store: ProcessingStateStore
    ) -> None:
        await processing_store.save([item("p", "a"), item("p", "b")])
        await processing_store.save([item("p", "a", size=99, attempts=1)])
        loaded = await processing_store.load("p")
        assert loaded["a"].size == 99 and loaded["a"].attempts == 1 and "b" in loaded
        await processing_store.delete("p", ["b", "missing"])
        assert set(await processing_store.load("p")) == {"a"}
        await processing_store.delete("p", [])

    async def test_processors_never_see_each_others_rows(
        self, processing_store: ProcessingStateStore
    ) -> None:
        await processing_store.save([item("p1", "a"), item("p2", "a", size=2)])
        await processing_store.delete("p1", ["a"])
        assert await processing_store.load("p1") == {}
        assert (await processing_store.load("p2"))["a"].size == 2

    async def test_a_large_batch(self, processing_store: ProcessingStateStore) -> None:
        states = [item("p", f"k{i:04d}", size=i) for i in range(1500)]
        await processing_store.save(states)
        loaded = await processing_store.load("p")
        assert len(loaded) == 1500 and loaded["k1499"].size == 1499
