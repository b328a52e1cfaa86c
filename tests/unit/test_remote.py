"""Remote values over a fake clock and a fake API: TTL, stale-on-error, backoff, lookups."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

import pytest

from freshkeep import (
    ConfigurationError,
    DuplicateNameError,
    Keeper,
    RemoteUnavailableError,
    UnavailableError,
)
from freshkeep.remote import env_prefix
from freshkeep.testing import FakeClock


class FakeAPI:
    """A remote API per key: counts calls, can fail, can block on a gate."""

    def __init__(self, values: dict[Hashable, Any] | None = None) -> None:
        self.values: dict[Hashable, Any] = dict(values or {})
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, key: Hashable) -> Any:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.values.get(key, [])


def states(*rows: tuple[str, str, str]) -> list[dict[str, str]]:
    """Workflow states of a tracker project: (id, name, group)."""
    return [{"id": i, "name": n, "group": g} for i, n, g in rows]


def derive_states(value: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {
        "by_name": {s["name"]: s["id"] for s in value},
        "group": {s["id"]: s["group"] for s in value},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keeper(clock: FakeClock) -> Keeper:
    return Keeper(clock=clock)


async def test_ttl_serves_from_memory_then_refetches_the_new_value(
    keeper: Keeper, clock: FakeClock
) -> None:
    api = FakeAPI({"p1": ["todo"]})
    remote = keeper.remote("states", api, ttl=300)
    clock.advance(1000)
    assert await remote.get("p1") == ["todo"] and api.calls == 1
    api.values["p1"] = ["todo", "review"]
    clock.advance(100)  # t=1100
    read = await remote.read("p1")
    assert read.value == ["todo"] and read.status == "hit" and read.age == 100
    assert api.calls == 1
    clock.advance(300)  # t=1400
    read = await remote.read("p1")
    assert read.value == ["todo", "review"] and read.status == "miss" and api.calls == 2


async def test_keys_are_independent(keeper: Keeper) -> None:
    api = FakeAPI({"p1": [1], "p2": [2]})
    remote = keeper.remote("states", api, ttl=60)
    assert (await remote.get("p1"), await remote.get("p2")) == ([1], [2])
    assert await remote.get("p1") == [1] and api.calls == 2


async def test_ttl_zero_keeps_the_value_for_the_process_lifetime(
    keeper: Keeper, clock: FakeClock
) -> None:
    api = FakeAPI({None: "v1"})
    remote = keeper.remote("flags", api, ttl=0)
    assert await remote.get() == "v1"
    api.values[None] = "v2"
    clock.advance(1_000_000)
    assert await remote.get() == "v1" and api.calls == 1
    remote.reload()
    assert await remote.get() == "v2" and api.calls == 2
    assert await remote.get() == "v2" and api.calls == 2


async def test_reload_of_one_key_keeps_the_others(keeper: Keeper) -> None:
    api = FakeAPI({"a": 1, "b": 2})
    remote = keeper.remote("r", api, ttl=0)
    await remote.get("a"), await remote.get("b")
    remote.reload("a")
    await remote.get("a"), await remote.get("b")
    assert api.calls == 3


async def test_nothing_cached_and_failing_serves_the_fallback_object(keeper: Keeper) -> None:
    api = FakeAPI()
    api.fail = RuntimeError("502 bad gateway")
    fallback: list[str] = ["todo", "done"]
    remote = keeper.remote("states", api, ttl=300, fallback=fallback)
    read = await remote.read("p1")
    assert read.value is fallback and read.status == "fallback"
    assert isinstance(read.error, RuntimeError) and read.age is None
    stats = remote.snapshot().to_dict()
    assert stats["fetch_errors"] == 1 and stats["last_error"] == "RuntimeError: 502 bad gateway"
    assert stats["values"]["p1"]["failures"] == 1 and stats["values"]["p1"]["age"] is None


async def test_nothing_cached_failing_and_no_fallback_raises_a_typed_error(
    keeper: Keeper,
) -> None:
    api = FakeAPI()
    api.fail = RuntimeError("boom")
    remote = keeper.remote("states", api, ttl=300)
    with pytest.raises(RemoteUnavailableError) as info:
        await remote.get("p1")
    assert isinstance(info.value, UnavailableError)
    assert info.value.remote == "states" and info.value.key == "p1"
    assert isinstance(info.value.__cause__, RuntimeError) and "boom" in str(info.value)
    # In the backoff window the error is raised without a fetch.
    with pytest.raises(RemoteUnavailableError):
        await remote.get("p1")
    assert api.calls == 1


async def test_a_failed_refresh_serves_the_stale_value_never_the_fallback(
    keeper: Keeper, clock: FakeClock
) -> None:
    api = FakeAPI({"p1": ["real"]})
    remote = keeper.remote("states", api, ttl=300, fallback=["fallback"])
    await remote.get("p1")
    api.fail = RuntimeError("timeout")
    clock.advance(5000)
    read = await remote.read("p1")
    assert read.value == ["real"] and read.status == "error-stale" and read.age == 5000
    assert isinstance(read.error, RuntimeError)
    clock.advance(100_000)  # however long the outage lasts
    assert await remote.get("p1") == ["real"]
    snap = remote.snapshot().to_dict()
    assert snap["values"]["p1"]["age"] == 105_000 and snap["failing"] == 1
    assert snap["values"]["p1"]["last_error"] == "RuntimeError: timeout"
    assert snap["reads"]["error-stale"] == 2 and snap["max_age"] == 105_000
    api.fail = None
    clock.advance(60)  # past the backoff
    read = await remote.read("p1")
    assert read.status == "miss" and remote.snapshot().values["p1"].failures == 0


async def test_backoff_during_an_outage(keeper: Keeper, clock: FakeClock) -> None:
    api = FakeAPI({"p1": ["real"]})
    remote = keeper.remote(
        "states", api, ttl=10, fallback=[], retry_backoff=1, max_retry_backoff=30
    )
    await remote.get("p1")
    api.fail = RuntimeError("down")
    clock.advance(10)
    for _ in range(100):  # 100 calls over 50 seconds
        assert await remote.get("p1") == ["real"]
        clock.advance(0.5)
    # attempts at t=10, 11, 13, 17, 25, 41: the backoff doubles
    assert api.calls - 1 <= 6
    empty = keeper.remote("other", api, ttl=10, fallback=[])
    for _ in range(100):
        assert await empty.get("p2") == []
    assert api.calls - 1 <= 7


async def test_max_stale_bounds_stale_serving(keeper: Keeper, clock: FakeClock) -> None:
    api = FakeAPI({"p1": "real"})
    remote = keeper.remote("r", api, ttl=10, max_stale=100, fallback="fb")
    await remote.get("p1")
    api.fail = RuntimeError("down")
    clock.advance(50)
    assert await remote.get("p1") == "real"
    clock.advance(100)
    assert (await remote.read("p1")).status == "fallback"


async def test_derived_lookups_come_from_the_same_fetch(keeper: Keeper, clock: FakeClock) -> None:
    api = FakeAPI({"p1": states(("s1", "Todo", "backlog"), ("s2", "Done", "completed"))})
    remote = keeper.remote("states", api, ttl=300, derive=derive_states)
    read = await remote.read("p1")
    assert read.lookup("by_name") == {"Todo": "s1", "Done": "s2"}
    assert read.lookup("group") == {"s1": "backlog", "s2": "completed"}
    assert await remote.lookup("group", "p1") == {"s1": "backlog", "s2": "completed"}
    assert api.calls == 1
    # A new state appears: after the TTL both lookups change together, from one fetch.
    api.values["p1"] = [*api.values["p1"], {"id": "s3", "name": "Review", "group": "started"}]
    clock.advance(301)
    read = await remote.read("p1")
    assert api.calls == 2
    assert read.lookup("by_name")["Review"] == "s3" and read.lookup("group")["s3"] == "started"
    assert remote.peek("p1") is not None and remote.peek("p1").lookups is read.lookups  # type: ignore[union-attr]
    assert await remote.lookup("group", "unknown-project") == {}
    with pytest.raises(ConfigurationError, match="no derived lookup 'nope'"):
        await remote.lookup("nope", "p1")
    with pytest.raises(TypeError):
        read.lookup("group")["s9"] = "x"  # type: ignore[index]


async def test_fallback_lookups_are_derived_from_the_fallback(keeper: Keeper) -> None:
    api = FakeAPI()
    api.fail = RuntimeError("404")
    remote = keeper.remote("states", api, ttl=300, fallback=[], derive=derive_states)
    assert await remote.lookup("group", "unknown") == {}
    with pytest.raises(ConfigurationError, match="derive"):
        keeper.remote("bad", api, ttl=1, fallback=None, derive=derive_states)


async def test_a_failing_derive_is_a_failed_fetch(keeper: Keeper, clock: FakeClock) -> None:
    api = FakeAPI({"p1": states(("s1", "Todo", "backlog"))})
    remote = keeper.remote("states", api, ttl=10, derive=derive_states)
    await remote.get("p1")
    api.values["p1"] = [{"id": "s2"}]  # malformed: no name
    clock.advance(11)
    read = await remote.read("p1")
    assert read.status == "error-stale" and read.lookup("group") == {"s1": "backlog"}
    assert remote.stats.fetch_errors == 1


async def test_concurrent_reads_share_one_fetch(keeper: Keeper) -> None:
    api = FakeAPI({"p1": "v"})
    api.gate = asyncio.Event()
    remote = keeper.remote("r", api, ttl=60)
    tasks = [asyncio.create_task(remote.read("p1")) for _ in range(10)]
    await api.started.wait()
    api.gate.set()
    reads = await asyncio.gather(*tasks)
    assert api.calls == 1 and {r.value for r in reads} == {"v"}
    assert remote.stats.collapsed == 9


async def test_stale_while_revalidate_refreshes_in_the_background_once(
    keeper: Keeper, clock: FakeClock
) -> None:
    api = FakeAPI({"p1": "v1"})
    remote = keeper.remote("r", api, ttl=60, swr=True)
    await remote.get("p1")
    api.values["p1"] = "v2"
    api.gate, api.started = asyncio.Event(), asyncio.Event()
    clock.advance(61)
    reads = [await remote.read("p1") for _ in range(5)]
    assert {(r.value, r.status) for r in reads} == {("v1", "stale")}
    await api.started.wait()
    assert api.calls == 2 and remote.in_flight == 1
    api.gate.set()
    await keeper.wait_idle()
    read = await remote.read("p1")
    assert (read.value, read.status) == ("v2", "hit")
    assert remote.stats.background_refreshes == 1


async def test_swr_background_failure_is_counted_and_backs_off(
    keeper: Keeper, clock: FakeClock
) -> None:
    api = FakeAPI({"p1": "v1"})
    remote = keeper.remote("r", api, ttl=60, swr=True)
    await remote.get("p1")
    api.fail = RuntimeError("down")
    clock.advance(61)
    assert (await remote.read("p1")).status == "stale"
    await keeper.wait_idle()
    assert remote.stats.fetch_errors == 1
    for _ in range(20):
        assert (await remote.read("p1")).status == "error-stale"
    assert api.calls == 2


async def test_reload_during_a_fetch_marks_its_value_expired(keeper: Keeper) -> None:
    api = FakeAPI({"p1": "old"})
    api.gate = asyncio.Event()
    remote = keeper.remote("r", api, ttl=600)
    task = asyncio.create_task(remote.get("p1"))
    await api.started.wait()
    remote.reload("p1")
    api.gate.set()
    assert await task == "old"
    api.gate = None
    api.values["p1"] = "new"
    assert await remote.get("p1") == "new" and api.calls == 2


async def test_refresh_fetches_now(keeper: Keeper) -> None:
    api = FakeAPI({"p1": 1})
    remote = keeper.remote("r", api, ttl=600)
    await remote.get("p1")
    api.values["p1"] = 2
    assert await remote.get("p1", refresh=True) == 2


def test_env_overrides_the_ttl(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    assert env_prefix("tracker-states.v2") == "FRESHKEEP_REMOTE_TRACKER_STATES_V2_"
    monkeypatch.setenv("FRESHKEEP_REMOTE_TRACKER_STATES_TTL_S", "30")
    monkeypatch.setenv("FRESHKEEP_REMOTE_TRACKER_STATES_SWR", "true")
    monkeypatch.setenv("FRESHKEEP_REMOTE_TRACKER_STATES_MAX_STALE_S", "3600")
    keeper = Keeper(clock=clock)
    remote = keeper.remote("tracker-states", FakeAPI(), ttl=300)
    assert (remote.config.ttl, remote.config.swr, remote.config.max_stale) == (30, True, 3600)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TTL_S", "soon"), ("TTL_S", "-1"), ("TTL_S", "inf"), ("SWR", "maybe")],
)
def test_a_bad_env_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, variable: str, value: str
) -> None:
    monkeypatch.setenv(f"FRESHKEEP_REMOTE_STATES_{variable}", value)
    with pytest.raises(ConfigurationError, match=f"FRESHKEEP_REMOTE_STATES_{variable}="):
        Keeper(clock=clock).remote("states", FakeAPI(), ttl=300)


def test_bad_arguments(keeper: Keeper) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        keeper.remote("a", FakeAPI(), ttl=-1)
    with pytest.raises(ConfigurationError, match="non-empty"):
        keeper.remote("", FakeAPI(), ttl=1)
    with pytest.raises(ConfigurationError, match="fetch"):
        keeper.remote("b", None, ttl=1)
    keeper.remote("c", FakeAPI(), ttl=1)
    with pytest.raises(DuplicateNameError):
        keeper.remote("c", FakeAPI(), ttl=1)


async def test_a_sync_fetch_serves_both_apis(keeper: Keeper, clock: FakeClock) -> None:
    calls: list[Hashable] = []

    def fetch(key: Hashable) -> str:
        calls.append(key)
        return f"value of {key}"

    remote = keeper.remote("r", fetch, ttl=60)
    assert remote.get_sync("a") == "value of a"
    assert await remote.get("a") == "value of a" and calls == ["a"]
    assert await remote.get("b") == "value of b"  # run in a worker thread
    clock.advance(61)
    assert remote.read_sync("b").status == "miss" and calls == ["a", "b", "b"]


def test_get_sync_shares_one_fetch_between_threads(keeper: Keeper) -> None:
    entered, release = threading.Event(), threading.Event()
    calls = 0

    def fetch(key: Hashable) -> int:
        nonlocal calls
        calls += 1
        entered.set()
        release.wait(5)
        return 42

    remote = keeper.remote("r", fetch, ttl=60)
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(remote.get_sync()))
    first.start()
    entered.wait(5)
    others = [threading.Thread(target=lambda: results.append(remote.get_sync())) for _ in range(4)]
    for t in others:
        t.start()
    release.set()
    for t in [first, *others]:
        t.join(5)
    assert results == [42] * 5 and calls == 1


def test_get_sync_on_failure_serves_stale_or_fallback(keeper: Keeper, clock: FakeClock) -> None:
    fail = False

    def fetch(key: Hashable) -> str:
        if fail:
            raise OSError("unreachable")
        return "real"

    remote = keeper.remote("r", fetch, ttl=5, fallback="fb")
    assert remote.get_sync() == "real"
    fail = True
    clock.advance(6)
    assert remote.read_sync().status == "error-stale"
    assert remote.read_sync("never").value == "fb"


async def test_get_sync_needs_a_sync_fetch(keeper: Keeper) -> None:
    remote = keeper.remote("r", FakeAPI(), ttl=5)
    with pytest.raises(ConfigurationError, match="fetch_sync"):
        remote.get_sync()
    both = keeper.remote("both", FakeAPI({"k": "async"}), ttl=5, fetch_sync=lambda k: "sync")
    assert both.get_sync("k") == "sync" and await both.get("k") == "sync"  # hit: same record


async def test_remotes_show_in_the_keeper_stats(keeper: Keeper, clock: FakeClock) -> None:
    api = FakeAPI({"p1": 1})
    remote = keeper.remote("states", api, ttl=300)
    await remote.get("p1")
    await remote.get("p1")
    stats = keeper.snapshot().remotes["states"]
    assert stats.ttl == 300 and stats.fetches == 1
    assert stats.reads == {"miss": 1, "hit": 1} and stats.keys == 1
    assert stats.values["p1"].fetched_at == clock.time()
    assert keeper.remotes["states"] is remote


async def test_a_callable_returning_a_coroutine_is_awaited(keeper: Keeper) -> None:
    api = FakeAPI({"k": "v"})
    remote = keeper.remote("r", lambda key: api(key), ttl=5)
    assert await remote.get("k") == "v"
    remote.reload()
    with pytest.raises(ConfigurationError, match="returned an awaitable"):
        remote.get_sync("k")


async def test_no_fallback_is_a_named_sentinel() -> None:
    from freshkeep.remote import NO_FALLBACK

    assert repr(NO_FALLBACK) == "NO_FALLBACK"


async def test_a_reload_keeps_the_value_for_a_failing_fetch(keeper: Keeper) -> None:
    api = FakeAPI({"p1": "real"})
    remote = keeper.remote("r", api, ttl=0, fallback="fb")
    await remote.get("p1")
    api.fail = RuntimeError("down")
    remote.reload()
    read = await remote.read("p1")
    assert (read.value, read.status) == ("real", "error-stale") and api.calls == 2
