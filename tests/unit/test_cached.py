"""``@keeper.cached``: keys from arguments, statuses and bounds of a view, principals."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshkeep import ConfigurationError, Keeper, Policy
from freshkeep.core.partitions import Partitioned
from freshkeep.exceptions import FreshkeepError
from freshkeep.stores.memory_shared import MemorySharedStore
from freshkeep.testing import FakeClock, MemoryRevisions


def make_keeper() -> Keeper:
    return Keeper(MemoryRevisions(), clock=FakeClock(), probe="interval")


async def test_a_call_is_a_miss_then_a_hit_and_returns_the_value() -> None:
    keeper = make_keeper()
    calls: list[tuple[int, int]] = []

    @keeper.cached(sources=["t:a"])
    async def total(a: int, b: int = 1) -> dict[str, int]:
        calls.append((a, b))
        return {"sum": a + b}

    assert await total(1) == {"sum": 2}
    assert (await total.read(1)).status == "hit"
    assert await total(a=1, b=1) == {"sum": 2}  # the same call, bound with its default
    assert await total(1, 2) == {"sum": 3}
    assert calls == [(1, 1), (1, 2)]
    assert keeper.get_view("test_a_call_is_a_miss_then_a_hit_and_returns_the_value.<locals>.total")
    assert total.view.snapshot().reads["hit"] == 2
    assert total.key_of(1) == (1, 1) and total.key_of(a=1, b=2) == (1, 2)


async def test_each_call_gets_its_own_copy_of_the_value() -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"], name="items")
    async def items() -> list[int]:
        return [1, 2]

    first = await items()
    first.append(3)
    assert await items() == [1, 2]
    assert items.key_of() is None and items.view.name == "items"


async def test_a_bump_of_a_source_rebuilds_and_swr_serves_stale() -> None:
    keeper = make_keeper()
    value = {"n": 0}

    @keeper.cached(sources=["t:a"], policy=Policy.swr(30))
    async def counter(name: str) -> dict[str, Any]:
        return {"name": name, "n": value["n"]}

    assert await counter("x") == {"name": "x", "n": 0}
    value["n"] = 1
    await keeper.bump("t:a")  # this process's commit: read-your-writes
    read = await counter.read("x")
    assert read.status == "miss" and read.value == {"name": "x", "n": 1}
    assert counter.invalidate("x") and not counter.invalidate("y")


async def test_concurrent_calls_of_one_key_share_one_build() -> None:
    keeper = make_keeper()
    gate, started, calls = asyncio.Event(), asyncio.Event(), []

    @keeper.cached(sources=["t:a"])
    async def slow(k: int) -> int:
        calls.append(k)
        started.set()
        await gate.wait()
        return k * 10

    tasks = [asyncio.create_task(slow(3)) for _ in range(20)]
    await started.wait()
    gate.set()
    assert await asyncio.gather(*tasks) == [30] * 20
    assert calls == [3]


async def test_a_partitioned_source_follows_the_one_argument() -> None:
    keeper = make_keeper()
    orders = Partitioned("table:orders", "customer_id", 64)
    built: list[int] = []

    @keeper.cached(sources=[orders])
    async def orders_of(customer_id: int) -> list[int]:
        built.append(customer_id)
        return [customer_id]

    await orders_of(1)
    await orders_of(2)
    await keeper.bump(orders.source(2))  # a commit of customer 2's rows
    assert (await orders_of.read(1)).status == "hit"
    assert (await orders_of.read(2)).status == "miss"
    assert built == [1, 2, 2]


async def test_an_unhashable_argument_is_a_clear_type_error() -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"])
    async def of(ids: list[int]) -> int:
        return len(ids)

    with pytest.raises(TypeError, match=r"argument 'ids' is a list.*key= function"):
        await of([1, 2])


async def test_a_key_function_keys_unhashable_arguments_and_builds_from_the_call() -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"], key=lambda ids: tuple(sorted(ids)))
    async def of(ids: list[int]) -> int:
        return sum(ids)

    assert await of([2, 1]) == 3
    assert (await of.read([1, 2])).status == "hit"
    await keeper.bump("t:a")
    assert (await of.read([1, 2])).status == "miss"


async def test_kwargs_and_varargs_are_part_of_the_key() -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"])
    async def f(a: int, *rest: int, scale: int = 1, **extra: int) -> list[int]:
        return [a * scale, *rest, *sorted(extra.values())]

    assert await f(1, 2, 3, scale=2, y=5, x=4) == [2, 2, 3, 4, 5]
    assert f.key_of(1, 2, 3, scale=2, y=5, x=4) == (1, (2, 3), 2, (("x", 4), ("y", 5)))
    await keeper.bump("t:a")  # a rebuild calls the function again from the key alone
    assert await f(1, 2, 3, scale=2, x=4, y=5) == [2, 2, 3, 4, 5]


async def test_per_principal_entries_are_never_shared() -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"], per_principal=True)
    async def mine(topic: int, principal: str) -> dict[str, Any]:
        return {"topic": topic, "for": principal}

    assert await mine(1, "alice") == {"topic": 1, "for": "alice"}
    assert await mine(1, principal="bob") == {"topic": 1, "for": "bob"}
    assert mine.key_of(1, "alice") == 1
    assert mine.view.per_principal
    await keeper.bump("t:a")
    assert await mine(1, "bob") == {"topic": 1, "for": "bob"}  # rebuilt as bob


async def test_misdeclared_functions_are_configuration_errors() -> None:
    keeper = make_keeper()

    def sync(a: int) -> int:
        return a

    with pytest.raises(ConfigurationError, match="async function"):
        keeper.cached(sources=["t:a"])(sync)  # type: ignore[arg-type]

    async def no_principal(a: int) -> int:
        return a

    with pytest.raises(ConfigurationError, match="'principal'"):
        keeper.cached(sources=["t:a"], per_principal=True)(no_principal)


@given(a=st.integers(), b=st.integers() | st.none(), by_name=st.booleans())
def test_every_spelling_of_a_call_has_one_key(a: int, b: int | None, by_name: bool) -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"])
    async def f(a: int, b: int | None = None) -> int:
        return a

    spelled = f.key_of(a=a, b=b) if by_name else f.key_of(a, b)
    assert spelled == f.key_of(a, b=b) == (a, b)
    if b is None:
        assert f.key_of(a) == spelled


async def test_a_partitioned_source_follows_the_parameter_named_as_its_column() -> None:
    keeper = make_keeper()
    orders = Partitioned("table:orders", "customer_id")
    db = {7: ["a"], 8: ["x"]}

    @keeper.cached(sources=[orders])
    async def orders_of(customer_id: int, limit: int = 20) -> list[str]:
        return db.get(customer_id, [])[:limit]

    assert await orders_of(7) == ["a"]
    assert await orders_of(8) == ["x"]
    db[7] = ["a", "b"]
    await keeper.bump(orders.source(7))  # a commit of customer 7's rows
    assert (await orders_of.read(8)).status == "hit"  # another partition: still current
    assert (await orders_of.read(7)).status != "hit"
    assert await orders_of(7) == ["a", "b"]


def test_a_partitioned_source_without_its_parameter_is_refused() -> None:
    keeper = make_keeper()
    orders = Partitioned("table:orders", "customer_id")
    with pytest.raises(ConfigurationError, match=r"named 'customer_id'.*name the parameter"):

        @keeper.cached(sources=[orders])
        async def orders_of(cid: int, limit: int = 20) -> list[str]:
            return []


async def test_int_bool_and_float_arguments_are_distinct_entries() -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"])
    async def describe(x: int | bool | float) -> str:
        return f"{type(x).__name__}:{x!r}"

    assert await describe(1) == "int:1"
    assert await describe(True) == "bool:True"
    assert await describe(1.0) == "float:1.0"
    assert await describe((1,)) == "tuple:(1,)"
    assert await describe((True,)) == "tuple:(True,)"
    assert len({describe.key_of(1), describe.key_of(True), describe.key_of(1.0)}) == 3


async def test_a_datetime_and_its_iso_text_are_distinct_entries_of_a_shared_store() -> None:
    clock = FakeClock()
    revisions = MemoryRevisions()
    shared = MemorySharedStore(secret=b"s", clock=clock)

    def report_on(keeper: Keeper) -> Any:
        @keeper.cached(sources=["t:a"], name="report")
        async def report(day: datetime | str) -> str:
            return f"{type(day).__name__}:{day}"

        return report

    a = report_on(Keeper(revisions, shared=shared, clock=clock, probe="interval"))
    b = report_on(Keeper(revisions, shared=shared, clock=clock, probe="interval"))
    assert await a(datetime(2026, 1, 1)) == "datetime:2026-01-01 00:00:00"
    await a.view.wait_idle()  # stored in the shared store
    assert await b("2026-01-01T00:00:00") == "str:2026-01-01T00:00:00"
    assert await b(datetime(2026, 1, 1)) == "datetime:2026-01-01 00:00:00"


@given(st.lists(st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), st.text())))
def test_keys_are_equal_exactly_when_arguments_and_their_types_are(values: list[Any]) -> None:
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"])
    async def f(x: Any) -> None:
        return None

    for a in values:
        for b in values:
            same = type(a) is type(b) and a == b
            assert (f.key_of(a) == f.key_of(b)) is same


async def test_failed_builds_keep_a_bounded_retry_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, "freshkeep")
    keeper = make_keeper()

    @keeper.cached(sources=["t:a"])
    async def item(item_id: int) -> dict[str, int]:
        raise RuntimeError(f"no row {item_id}")

    for i in range(10_050):
        with pytest.raises(FreshkeepError):
            await item(i)
    assert len(item.view._retry_at) <= 10_000
