"""A build answers its reads once the entry is in this process's store; storing it in the
shared store, then letting go of the build lock, follows in the background."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from freshkeep import BuildContext, BuildError, Keeper, Section
from freshkeep.core.changes import Change
from freshkeep.core.entry import Entry
from freshkeep.stores.memory_shared import MemorySharedStore
from freshkeep.testing import MemoryRevisions


class SlowShared(MemorySharedStore):
    """A shared store whose puts wait for ``gate``, as a slow network would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.puts: list[int] = []

    async def put(self, key: str, entry: Entry) -> bool:
        await self.gate.wait()
        self.puts.append(int(entry.vector["t:a"]))
        return await super().put(key, entry)


def instance(revs: MemoryRevisions, shared: SlowShared, lock: Any) -> tuple[Keeper, Any, list[int]]:
    calls: list[int] = []

    async def build(ctx: BuildContext) -> dict[str, Any]:
        calls.append(int(ctx.revisions["t:a"]))
        return {"a": ctx.revisions["t:a"]}

    keeper = Keeper(revs, probe="interval", shared=shared, lock=lock)
    return keeper, keeper.view("v", sections={"s": Section(build, ["t:a"])}), calls


async def test_the_read_is_answered_before_the_shared_store_has_the_entry() -> None:
    revs, shared = MemoryRevisions(), SlowShared()
    lock = shared.lock()
    keeper, view, calls = instance(revs, shared, lock)
    read = await asyncio.wait_for(view.get(), 5.0)  # not held up by the slow put
    assert read.status == "miss" and shared.puts == [] and view.in_flight == 1
    assert lock.held  # still held: another instance waits for the entry, not builds it
    idle = asyncio.create_task(keeper.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()  # wait_idle() includes the write to the shared store
    shared.gate.set()
    await idle
    assert shared.puts == [0] and not lock.held and view.in_flight == 0
    _, other_view, other_calls = instance(revs, shared, lock)
    assert (await other_view.get()).status == "hit" and other_calls == []  # taken from it
    assert calls == [0]


async def test_the_next_build_of_the_key_waits_for_the_last_write_back() -> None:
    revs, shared = MemoryRevisions(), SlowShared()
    lock = shared.lock()
    keeper, view, calls = instance(revs, shared, lock)
    await view.get()
    await keeper.bump("t:a")
    second = asyncio.create_task(view.get())
    await asyncio.sleep(0.01)
    assert not second.done() and calls == [0]  # waits for the first entry to be stored
    shared.gate.set()
    read = await asyncio.wait_for(second, 5.0)
    assert read.status == "miss" and read.value == {"a": 1} and calls == [0, 1]
    await keeper.wait_idle()
    assert shared.puts == [0, 1] and not lock.held


async def test_a_look_that_raises_lets_go_of_the_lock_it_took() -> None:
    class Broken(SlowShared):
        async def get(self, key: str) -> Entry | None:
            await asyncio.sleep(0)  # the lock answers first
            raise RuntimeError("the shared store broke")

    revs, shared = MemoryRevisions(), Broken()
    lock = shared.lock()
    _, view, calls = instance(revs, shared, lock)
    with pytest.raises(BuildError, match="the shared store broke"):
        await view.get()
    assert not lock.held and calls == []


class Counting(MemorySharedStore):
    """A shared store that counts its looks."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, key: str) -> Entry | None:
        self.gets += 1
        return await super().get(key)


async def test_a_delta_needs_no_shared_look_or_lock_and_is_stored_in_the_background() -> None:
    revs, shared = MemoryRevisions(), Counting()
    lock = shared.lock()
    grabs: list[str] = []
    acquire = lock.acquire

    async def counted(name: str, lease: float) -> str | None:
        grabs.append(name)
        return await acquire(name, lease)

    lock.acquire = counted  # type: ignore[method-assign]
    builds: list[int] = []

    async def build(ctx: BuildContext) -> dict[str, Any]:
        builds.append(1)
        return {"n": 0}

    def apply(value: dict[str, Any], changes: Any) -> dict[str, Any]:
        return {"n": value["n"] + len(changes)}

    keeper = Keeper(revs, probe="interval", shared=shared, lock=lock)
    view = keeper.view("v", sections={"s": Section(build, ["table:a"], apply=apply)})
    keeper.changes.follow(["table:a"])
    await view.get()
    await keeper.wait_idle()
    gets, acquired = shared.gets, len(grabs)
    for n in (1, 2):  # two commits of this process, their rows known
        committed = await revs.bump(["table:a"])
        keeper.changes.record(committed, [Change("table:a", "insert", None, {})], ())
        keeper.committed(committed)
        read = await view.get()
        assert read.reason == "delta" and read.value == {"n": n}
    assert builds == [1] and (shared.gets, len(grabs)) == (gets, acquired)
    await keeper.wait_idle()  # both stored, in order: another instance takes the last
    other = Keeper(revs, probe="interval", shared=shared, lock=lock)
    other_view = other.view("v", sections={"s": Section(build, ["table:a"], apply=apply)})
    await other.resync()
    assert (await other_view.get()).value == {"n": 2} and builds == [1]
