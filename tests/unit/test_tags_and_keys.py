"""Tags (``keeper.bump("tag:…")``) and keyed sources without a database: what a view of a key
depends on, what a bump of a tag or a partition invalidates, in one keeper and across two
keepers on one bus."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from freshkeep import BuildContext, Keeper, LocalBus, Section
from freshkeep.core.partitions import Partitioned, bucket_of, split_source
from freshkeep.exceptions import ConfigurationError, UnknownSourceError
from freshkeep.testing import MemoryRevisions

ORDERS = Partitioned("table:orders", "customer_id")


def _counting(builds: dict[Any, int]) -> Any:
    async def build(ctx: BuildContext) -> dict[str, Any]:
        builds[ctx.key] = builds.get(ctx.key, 0) + 1
        return {"key": ctx.key, "n": builds[ctx.key]}

    return build


async def _statuses(view: Any, *keys: Any) -> list[str]:
    return [(await view.get(k)).status for k in keys]


async def test_a_tag_invalidates_the_views_that_depend_on_it_here_and_on_the_bus() -> None:
    bus = LocalBus()
    revisions = MemoryRevisions()
    a = Keeper(revisions, bus=bus, sources=["tag:pricing", "tag:other"], probe="interval")
    b = Keeper(revisions, bus=bus, sources=["tag:pricing", "tag:other"], probe="interval")
    views = [
        k.view("prices", _counting({}), sources=["tag:pricing"]) for k in (a, b)
    ]  # one per keeper
    others = [k.view("other", _counting({}), sources=["tag:other"]) for k in (a, b)]
    for k in (a, b):
        await k.start()
    for v in (*views, *others):
        assert (await v.get()).status == "miss"
        assert (await v.get()).status == "hit"
    revs = await a.bump("tag:pricing")
    assert revs == {"tag:pricing": 1}
    for v in views:  # read-your-writes on a, the bus on b
        assert (await v.get()).status == "miss"
    for v in others:
        assert (await v.get()).status == "hit"
    for k in (a, b):
        await k.aclose()


async def test_a_keyed_view_depends_on_its_keys_partition_only() -> None:
    keeper = Keeper(MemoryRevisions(), bus=LocalBus(), sources=["table:orders"])
    view = keeper.view("totals", _counting({}), sources=[ORDERS, "table:customers"])
    keeper.declare("table:customers")
    await keeper.start()
    assert keeper.partitions == (ORDERS,)
    assert await _statuses(view, 1, 2, 3) == ["miss"] * 3
    assert await _statuses(view, 1, 2, 3) == ["hit"] * 3
    assert (await view.get(2)).revision == (
        "table:customers=0,table:orders/*=0,table:orders/customer_id#2=0"
    )
    await keeper.bump(ORDERS.source(2))
    assert await _statuses(view, 1, 2, 3) == ["hit", "miss", "hit"]
    await keeper.bump("table:customers")  # a source every key reads
    assert await _statuses(view, 1, 2, 3) == ["miss"] * 3
    await keeper.bump("table:orders")  # the whole table, by hand: every partition
    assert await _statuses(view, 1, 2, 3) == ["miss"] * 3
    await keeper.aclose()


async def test_sources_of_a_key_given_by_a_callable_and_found_while_building() -> None:
    keeper = Keeper(MemoryRevisions(), bus=LocalBus(), sources=["table:orders", "table:lines"])
    lines = keeper.partition(Partitioned("table:lines", "order_id", buckets=8))
    keeper.partition(ORDERS)  # a callable's partitions are declared too

    async def build(ctx: BuildContext) -> dict[str, Any]:
        found = await ctx.depend(*lines.of(10, 11))
        return {"found": sorted(found)}

    view = keeper.view("pair", sections={"main": Section(build, lambda key: ORDERS.of(key[0]))})
    await keeper.start()
    read = await view.get((7, "x"))
    assert read.value["found"] == [
        "table:lines/*",
        "table:lines/order_id#2",
        "table:lines/order_id#3",
    ]
    assert (await view.get((7, "x"))).status == "hit"
    await keeper.bump(lines.source(18))  # bucket 2 of 8: order 10's bucket
    assert (await view.get((7, "x"))).status == "miss"
    await keeper.bump(lines.source(12))  # bucket 4: not depended on
    await keeper.bump(ORDERS.source(8))
    assert (await view.get((7, "x"))).status == "hit"
    await keeper.aclose()


async def test_a_partition_the_keeper_does_not_know_is_refused_when_depended_on() -> None:
    keeper = Keeper(MemoryRevisions(), bus=LocalBus(), sources=["table:lines"])
    lines = Partitioned("table:lines", "order_id")

    async def build(ctx: BuildContext) -> int:
        await ctx.depend(*lines.of(1))
        return 1

    view = keeper.view("v", build, sources=["table:lines"])
    await keeper.start()
    with pytest.raises(ConfigurationError, match=r"keeper.partition"):
        await view.get()
    await keeper.aclose()


async def test_a_typo_in_a_partitioned_table_is_an_error() -> None:
    keeper = Keeper(MemoryRevisions(), bus=LocalBus(), sources=["table:orders"])
    keeper.view("v", _counting({}), sources=[Partitioned("table:order", "customer_id")])
    with pytest.raises(UnknownSourceError, match="table:order"):
        await keeper.start()


def test_partitions_are_validated_and_named() -> None:
    with pytest.raises(ConfigurationError):
        Partitioned("orders", "customer_id")
    with pytest.raises(ConfigurationError):
        Partitioned("table:orders", "customer id")
    with pytest.raises(ConfigurationError):
        Partitioned("table:orders", "customer_id", buckets=0)
    keeper = Keeper(MemoryRevisions())
    keeper.partition(ORDERS)
    with pytest.raises(ConfigurationError, match="same number"):
        keeper.partition(Partitioned("table:orders", "customer_id", buckets=64))
    assert ORDERS.of(5) == ("table:orders/*", "table:orders/customer_id#5")
    assert split_source("table:orders/customer_id#5") == ("table:orders", "customer_id#5")
    assert split_source("table:orders/*") == ("table:orders", "*")
    assert split_source("table:orders") == ("table:orders", None)
    assert split_source("files:a/b") == ("files:a/b", None)
    assert bucket_of(-1, 1024) == 1023 and bucket_of(None, 8) == 0 and bucket_of(2048, 1024) == 0
    assert bucket_of("abc", 2**32) == 2416005272  # the first 32 bits of md5("abc")
    with pytest.raises(ConfigurationError):
        bucket_of(b"x", 8)


def test_an_enum_member_maps_by_its_name() -> None:
    """SQLAlchemy's Enum type stores a member's name: the database triggers hash that text."""

    class Status(enum.Enum):
        OPEN = "open"
        DONE = 2

    class Level(enum.IntEnum):
        LOW = 1

    assert bucket_of(Status.OPEN, 1024) == bucket_of("OPEN", 1024) != bucket_of("open", 1024)
    assert bucket_of(Status.DONE, 2**32) == bucket_of("DONE", 2**32)
    assert bucket_of(Level.LOW, 2**32) == bucket_of("LOW", 2**32)  # not its value, 1
    by = Partitioned("table:tickets", "status")
    assert by.source(Status.OPEN) == by.source("OPEN")
