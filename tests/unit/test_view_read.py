"""``View.read()``: the argument-free hit path never serves what ``get()`` would not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshkeep import BuildContext, ConfigurationError, Keeper, Policy, Section
from freshkeep.stores.memory import MemoryStore
from freshkeep.testing import FakeClock, MemoryRevisions


class Data:
    """The rows the sections are built from; a write changes them, then bumps the source."""

    def __init__(self) -> None:
        self.rows = {"t:a": 0, "t:b": 0}

    def builder(self, source: str) -> Any:
        async def build(ctx: BuildContext) -> dict[str, int]:
            return {source: self.rows[source]}

        return build


def make_view(keeper: Keeper, data: Data, policy: Policy | None = None, **kw: Any) -> Any:
    return keeper.view(
        "summary",
        sections={s: Section(data.builder(s), [s]) for s in data.rows},
        policy=policy,
        **kw,
    )


async def test_read_is_get_without_arguments() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")
    view = make_view(keeper, Data())
    first = await view.read()
    assert first.status == "miss"
    again = await view.read()
    assert again.status == "hit" and again.entry is first.entry
    assert (await view.get()).entry is again.entry
    assert view.snapshot().reads["hit"] == 2


async def test_a_write_in_between_is_never_served_stale_by_read() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")
    data = Data()
    view = make_view(keeper, data, Policy.swr(60))
    await view.read()
    assert (await view.read()).status == "hit"
    data.rows["t:a"] = 1
    await keeper.bump("t:a")  # committed here: read-your-writes even under swr
    after = await view.read()
    assert after.status == "section" and after.value == {"t:a": 1, "t:b": 0}
    assert (await view.read()).status == "hit"


async def test_read_follows_invalidate_refresh_and_eviction() -> None:
    store = MemoryStore(max_entries=1)
    keeper = Keeper(MemoryRevisions(), store=store, probe="interval")
    data = Data()
    view = make_view(keeper, data)
    other = keeper.view("other", sections={"x": Section(data.builder("t:b"), ["t:b"])})
    await view.read()
    assert view.invalidate()
    assert (await view.read()).status == "miss"
    view.invalidate(section="t:a")
    assert (await view.read()).status == "section"
    data.rows["t:a"] = 5  # a write nobody bumped: only a refresh sees it
    refreshed = await view.get(refresh=True)
    served = await view.read()
    assert served.status == "hit" and served.entry is refreshed.entry
    assert served.value["t:a"] == 5
    await other.get()  # evicts the summary's entry (one entry fits)
    assert view.peek() is None
    assert (await view.read()).status == "miss"


async def test_read_honours_max_age_and_probe_always() -> None:
    clock = FakeClock()
    keeper = Keeper(MemoryRevisions(), clock=clock, probe="interval", resync_interval=5.0)
    view = make_view(keeper, Data(), Policy.strict(max_age=10.0))
    await view.read()
    assert (await view.read()).status == "hit"
    clock.advance(11.0)
    await asyncio.sleep(0)  # the resync timer moves the epoch
    assert (await view.read()).status == "miss"

    revs = MemoryRevisions()
    always = make_view(Keeper(revs, probe="always"), Data())
    await always.read()
    revs.revisions["t:a"] = 3  # another process wrote: the probe sees it on the next read
    assert (await always.read()).status == "section"


async def test_per_principal_views_have_no_argument_free_read() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")
    view = make_view(keeper, Data(), per_principal=True)
    await view.get(principal="ann")
    with pytest.raises(ConfigurationError, match="per-principal"):
        await view.read()


async def test_keyed_view_read_is_the_unkeyed_entry() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")
    data = Data()

    async def build(ctx: BuildContext) -> dict[str, Any]:
        return {"key": ctx.key, "a": data.rows["t:a"]}

    view = keeper.view("keyed", sections={"s": Section(build, lambda key: ["t:a"])})
    await view.get("k")
    first = await view.read()
    assert first.value == {"key": None, "a": 0}
    data.rows["t:a"] = 2
    await keeper.bump("t:a")
    assert (await view.read()).value == {"key": None, "a": 2}
    assert (await view.get("k")).value == {"key": "k", "a": 2}


async def test_concurrent_readers_never_see_a_value_older_than_a_finished_write() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")
    data = Data()
    view = make_view(keeper, data)
    await view.read()
    done = 0  # the last write whose bump has returned
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal done
        for i in range(1, 200):
            data.rows["t:a"] = i
            await keeper.bump("t:a")
            done = i
            await asyncio.sleep(0)
        stop.set()

    async def reader() -> int:
        reads = 0
        while not stop.is_set():
            floor = done
            read = await view.read()
            assert read.value["t:a"] >= floor, (read.status, read.value, floor)
            reads += 1
            await asyncio.sleep(0)
        return reads

    results = await asyncio.gather(writer(), *(reader() for _ in range(8)))
    assert sum(r for r in results if r is not None) > 0


OPS = st.lists(
    st.sampled_from(["bump_a", "bump_b", "invalidate", "section", "refresh", "clear", "get"]),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_read_serves_what_get_would(ops: list[str]) -> None:
    """After any sequence of writes, drops and reads, ``read()`` serves the entry ``get()``
    finds current, built from the data as it is."""

    async def scenario() -> None:
        keeper = Keeper(MemoryRevisions(), probe="interval")
        data = Data()
        view = make_view(keeper, data)
        for op in ops:
            if op.startswith("bump_"):
                source = "t:" + op[-1]
                data.rows[source] += 1
                await keeper.bump(source)
            elif op == "invalidate":
                view.invalidate()
            elif op == "section":
                view.invalidate(section="t:b")
            elif op == "refresh":
                await view.get(refresh=True)
            elif op == "clear":
                keeper.store.clear()
            else:
                await view.get()
            read = await view.read()
            assert read.value == data.rows
            again = await view.get()
            assert again.status == "hit" and again.entry is read.entry
        await keeper.aclose()

    asyncio.run(scenario())
