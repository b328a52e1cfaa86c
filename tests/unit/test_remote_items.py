"""Remote values completed item by item (``defaults=``, ``fallback_item=``), and read from
memory only (``cached()``)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

import pytest

from freshkeep import ConfigurationError, Keeper
from freshkeep.testing import FakeClock


class Upstream:
    """A tracker's workflow states per project, keyed by the state's logical key."""

    def __init__(self) -> None:
        self.values: dict[Hashable, Any] = {}
        self.calls = 0
        self.fail: Exception | None = None

    def __call__(self, key: Hashable) -> Any:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return self.values[key]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keeper(clock: FakeClock) -> Keeper:
    return Keeper(clock=clock)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


def group_or_key(key: str, state: dict[str, Any]) -> dict[str, Any]:
    """A state without a group falls back to its logical key."""
    return state if state.get("group") else {**state, "group": key}


DEFAULTS = {
    "todo": {"name": "Todo", "group": "unstarted"},
    "done": {"name": "Done", "group": "completed"},
}


# -- defaults= and fallback_item= ------------------------------------------------------------


async def test_fallback_item_fills_the_field_an_item_lacks(
    keeper: Keeper, upstream: Upstream
) -> None:
    upstream.values["p1"] = {
        "todo": {"name": "Todo", "group": "unstarted"},
        "in_review": {"name": "In review"},  # no group
        "qa": {"name": "QA", "group": None},  # an empty group
    }
    states = keeper.remote("states", upstream, ttl=60, fallback_item=group_or_key)
    read = await states.read("p1")
    assert {k: s["group"] for k, s in read.value.items()} == {
        "todo": "unstarted",
        "in_review": "in_review",
        "qa": "qa",
    }
    assert read.filled == {"in_review", "qa"} and read.backfilled == frozenset()
    assert read.value["todo"] is upstream.values["p1"]["todo"]  # kept as it came
    assert "group" not in upstream.values["p1"]["in_review"]  # the fetched value is not mutated
    assert states.stats.filled == 2
    assert (await states.read("p1")).status == "hit" and upstream.calls == 1  # done once


async def test_defaults_backfill_missing_keys_and_the_fields_items_lack(
    keeper: Keeper, upstream: Upstream
) -> None:
    upstream.values["p1"] = {"todo": {"name": "To do"}, "doing": {"name": "Doing"}}
    states = keeper.remote("states", upstream, ttl=60, defaults=DEFAULTS)
    read = await states.read("p1")
    assert read.value == {
        "todo": {"name": "To do", "group": "unstarted"},  # the fetched name wins
        "doing": {"name": "Doing"},  # no default: as it came
        "done": {"name": "Done", "group": "completed"},  # left out by the fetch
    }
    assert read.backfilled == {"done"} and read.filled == {"todo"}
    snap = states.snapshot()
    assert (snap.backfilled, snap.filled) == (1, 1)
    record = states.peek("p1")
    assert record is not None and record.backfilled == {"done"} and record.value is read.value


async def test_both_together_and_derive_sees_the_completed_value(
    keeper: Keeper, upstream: Upstream
) -> None:
    upstream.values["p1"] = {"in_review": {"name": "In review"}}
    states = keeper.remote(
        "states",
        upstream,
        ttl=60,
        defaults=DEFAULTS,
        fallback_item=group_or_key,
        derive=lambda v: {"group": {k: s["group"] for k, s in v.items()}},
    )
    read = await states.read("p1")
    assert read.lookup("group") == {
        "in_review": "in_review",
        "todo": "unstarted",
        "done": "completed",
    }
    assert read.backfilled == {"todo", "done"} and read.filled == {"in_review"}


async def test_an_empty_fetch_is_the_defaults(keeper: Keeper, upstream: Upstream) -> None:
    upstream.values["p1"] = {}
    states = keeper.remote("states", upstream, ttl=60, defaults=DEFAULTS)
    assert await states.get("p1") == DEFAULTS
    assert (await states.get("p1")) is not DEFAULTS  # a copy: callers share it, not the config


async def test_a_value_that_is_not_a_mapping_is_a_failed_fetch(
    keeper: Keeper, upstream: Upstream, clock: FakeClock
) -> None:
    upstream.values["p1"] = {"todo": {"name": "Todo"}}
    states = keeper.remote("states", upstream, ttl=60, defaults=DEFAULTS, fallback={})
    first = await states.get("p1")
    upstream.values["p1"] = [{"id": "todo"}]  # a list: the caller forgot to key it
    clock.advance(61)
    read = await states.read("p1")
    assert read.status == "error-stale" and read.value == first  # the last good value
    assert isinstance(read.error, TypeError) and "mapping of key -> item" in str(read.error)
    assert states.stats.fetch_errors == 1


async def test_a_failing_fallback_item_keeps_the_previous_value(
    keeper: Keeper, upstream: Upstream, clock: FakeClock
) -> None:
    upstream.values["p1"] = {"todo": {"name": "Todo", "group": "unstarted"}}

    def strict(key: str, state: dict[str, Any]) -> dict[str, Any]:
        if "name" not in state:
            raise KeyError(f"state {key!r} has no name")
        return state

    states = keeper.remote("states", upstream, ttl=60, fallback_item=strict)
    first = await states.get("p1")
    upstream.values["p1"] = {"todo": {"group": "unstarted"}}
    clock.advance(61)
    read = await states.read("p1")
    assert read.status == "error-stale" and read.value is first
    assert isinstance(read.error, KeyError)


async def test_the_fallback_is_served_as_given(keeper: Keeper, upstream: Upstream) -> None:
    upstream.fail = RuntimeError("down")
    states = keeper.remote("states", upstream, ttl=60, defaults=DEFAULTS, fallback=dict(DEFAULTS))
    read = await states.read("p1")
    assert read.status == "fallback" and read.value == DEFAULTS
    assert read.backfilled == frozenset()  # nothing was fetched, nothing completed


def test_sync_reads_are_completed_too(keeper: Keeper, upstream: Upstream) -> None:
    upstream.values["p1"] = {"in_review": {"name": "In review"}}
    states = keeper.remote(
        "states", upstream, ttl=60, defaults=DEFAULTS, fallback_item=group_or_key
    )
    read = states.read_sync("p1")
    assert read.value["in_review"]["group"] == "in_review" and read.backfilled == {"todo", "done"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"defaults": [("todo", {})]}, "defaults must be a mapping of key -> default item"),
        ({"fallback_item": "group"}, "fallback_item must be callable"),
        ({"fallback_item": lambda k: k}, None),  # its arity is the caller's: not checked here
    ],
)
def test_bad_completion_arguments_are_refused_at_registration(
    keeper: Keeper, upstream: Upstream, kwargs: dict[str, Any], message: str | None
) -> None:
    if message is None:
        keeper.remote("states", upstream, ttl=60, **kwargs)
        return
    with pytest.raises(ConfigurationError, match=message):
        keeper.remote("states", upstream, ttl=60, **kwargs)


def test_an_async_fallback_item_is_refused(keeper: Keeper, upstream: Upstream) -> None:
    async def later(key: str, item: Any) -> Any:
        return item

    with pytest.raises(ConfigurationError, match="fallback_item must be a plain function"):
        keeper.remote("states", upstream, ttl=60, fallback_item=later)


# -- cached() --------------------------------------------------------------------------------


async def test_cached_answers_from_memory_and_never_fetches(
    keeper: Keeper, upstream: Upstream, clock: FakeClock
) -> None:
    upstream.values["p1"] = {"todo": {"name": "Todo"}}
    states = keeper.remote("states", upstream, ttl=60, fallback={"x": 1}, defaults=DEFAULTS)
    assert states.cached("p1") is None and states.cached("p1", {}) == {}  # not the fallback
    assert upstream.calls == 0 and states.stats.reads == {} and states.in_flight == 0
    value = await states.get("p1")
    assert states.cached("p1") is value and "done" in value
    clock.advance(3600)  # past the TTL: still the value held, and still no fetch
    assert states.cached("p1") is value
    assert upstream.calls == 1 and states.stats.reads == {"miss": 1}
    assert states.cached("p2", {}) == {}  # another key: nothing held


async def test_cached_starts_no_background_refresh(
    keeper: Keeper, upstream: Upstream, clock: FakeClock
) -> None:
    upstream.values[None] = {"on": True}
    flags = keeper.remote("flags", upstream, ttl=10, swr=True)
    await flags.get()
    clock.advance(11)
    assert flags.cached() == {"on": True}
    await asyncio.sleep(0)
    assert flags.in_flight == 0 and upstream.calls == 1 and flags.stats.background_refreshes == 0


async def test_cached_keeps_the_max_stale_bound(
    keeper: Keeper, upstream: Upstream, clock: FakeClock
) -> None:
    upstream.values["p1"] = {"todo": {}}
    states = keeper.remote("states", upstream, ttl=10, max_stale=100)
    await states.get("p1")
    clock.advance(50)
    assert states.cached("p1") == {"todo": {}}
    clock.advance(51)  # older than max_stale: a read would not serve it either
    assert states.cached("p1") is None and states.cached("p1", {}) == {}


async def test_cached_is_safe_from_another_thread(keeper: Keeper, upstream: Upstream) -> None:
    upstream.values["p1"] = {"todo": {}}
    states = keeper.remote("states", upstream, ttl=60)
    await states.get("p1")
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(states.cached("p1")))
    thread.start()
    thread.join()
    assert seen == [{"todo": {}}]


# -- the docs' example -----------------------------------------------------------------------


async def test_the_docs_example_completes_the_trackers_states(keeper: Keeper) -> None:
    """docs/remote-and-notify.md, "Completing items", against a fake tracker."""
    import httpx

    from tests.docs_blocks import python_block, run_block

    requests: list[str] = []

    def tracker(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        if request.url.path != "/api/projects/proj-1/states":
            return httpx.Response(404)
        return httpx.Response(
            200,
            json=[
                {"key": "todo", "name": "To do", "group": "unstarted"},
                {"key": "in_review", "name": "In review"},
            ],
        )

    transport = httpx.MockTransport(tracker)
    async with httpx.AsyncClient(transport=transport, base_url="https://tracker.test") as client:
        block = python_block("remote-and-notify.md", "completing-items")
        found = await run_block(block, {"keeper": keeper, "client": client})
    read, states = found["read"], found["states"]
    assert read.value["in_review"]["group"] == "in_review"
    assert read.value["done"]["group"] == "completed"
    assert read.value["todo"] == {"key": "todo", "name": "To do", "group": "unstarted"}
    assert (read.backfilled, read.filled) == ({"done"}, {"in_review"})
    assert states.cached("proj-1") is read.value and states.cached("proj-2", {}) == {}
    assert requests == ["/api/projects/proj-1/states"]  # cached() asked nothing
