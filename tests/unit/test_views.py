"""Views over in-memory revisions: statuses, sections, single-flight, bounds, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from freshkeep import (
    BuildContext,
    BuildError,
    ConfigurationError,
    DuplicateViewError,
    EncodeError,
    Keeper,
    Policy,
    RevisionSourceError,
    Section,
    UnknownViewError,
)
from freshkeep.testing import FakeClock, MemoryRevisions


class Builder:
    """A section builder that counts calls, can block on an event, and can fail."""

    def __init__(self, field: str, value: Any = 0) -> None:
        self.field = field
        self.value = value
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {self.field: self.value}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def revs() -> MemoryRevisions:
    return MemoryRevisions()


def two_sections(keeper: Keeper, policy: Policy | None = None) -> tuple[Any, Builder, Builder]:
    core, tail = Builder("core"), Builder("tail")
    view = keeper.view(
        "summary",
        sections={"core": Section(core, ["t:a", "t:b"]), "tail": Section(tail, ["t:c"])},
        policy=policy,
    )
    return view, core, tail


async def test_miss_then_hit_with_same_revision(revs: MemoryRevisions, clock: FakeClock) -> None:
    keeper = Keeper(revs, clock=clock, probe="interval")
    view, core, tail = two_sections(keeper)
    first = await view.get()
    assert first.status == "miss" and first.value == {"core": 0, "tail": 0}
    second = await view.get()
    assert second.status == "hit" and second.revision == first.revision
    assert second.etag == first.etag and (core.calls, tail.calls) == (1, 1)


async def test_a_local_commit_rebuilds_only_its_section(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="interval")
    view, core, tail = two_sections(keeper, Policy.swr(60))
    before = await view.get()
    tail.value = 1
    await keeper.bump("t:c")  # committed here: read-your-writes even under swr
    after = await view.get()
    assert after.status == "section" and after.value == {"core": 0, "tail": 1}
    assert after.revision != before.revision and (core.calls, tail.calls) == (1, 2)


async def test_etag_is_derived_from_revisions_and_stable_across_keepers(
    revs: MemoryRevisions,
) -> None:
    reads = []
    for _ in range(2):
        keeper = Keeper(revs)
        view, _, _ = two_sections(keeper)
        reads.append(await view.get())
        assert await view.current_etag() == reads[-1].etag
    assert reads[0].etag == reads[1].etag and reads[0].etag.startswith('W/"')


async def test_concurrent_misses_share_one_build(revs: MemoryRevisions) -> None:
    keeper = Keeper(revs)
    view, core, tail = two_sections(keeper)
    core.gate = asyncio.Event()
    readers = [asyncio.create_task(view.get()) for _ in range(50)]
    await core.started.wait()
    core.gate.set()
    results = await asyncio.gather(*readers)
    assert core.calls == 1 and tail.calls == 1
    assert {r.status for r in results} == {"miss"}
    assert sum(r.collapsed for r in results) == 49


async def test_unseen_change_is_served_stale_with_one_background_rebuild(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="interval")
    view, core, _ = two_sections(keeper, Policy.swr(30))
    await view.get()
    revs.revisions["t:a"] = 7  # another process wrote and this one did not hear of it
    assert (await view.get()).status == "hit"  # within resync_interval: not known yet
    clock.advance(1.0)  # the interval ends: the next read re-reads revisions
    core.gate = asyncio.Event()
    core.value = 7
    results = await asyncio.gather(*(view.get() for _ in range(50)))
    assert {r.status for r in results} == {"stale"}
    await core.started.wait()
    core.gate.set()
    await keeper.wait_idle()
    assert core.calls == 2 and view.stats.background_refreshes == 1
    fresh = await view.get()
    assert fresh.status == "hit" and fresh.value["core"] == 7


async def test_never_stale_past_max_stale(revs: MemoryRevisions, clock: FakeClock) -> None:
    keeper = Keeper(revs, clock=clock, probe="always")
    view, core, _ = two_sections(keeper, Policy.swr(10))
    await view.get()
    clock.advance(10.5)
    revs.revisions["t:a"] = 1
    read = await view.get()
    assert read.status == "section" and core.calls == 2


async def test_builder_failure_serves_error_stale_then_a_clear_error(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="always")
    view, core, _ = two_sections(keeper, Policy.strict(stale_if_error=60))
    good = await view.get()
    core.fail = RuntimeError("database on fire")
    revs.revisions["t:a"] = 1
    read = await view.get()
    assert read.status == "error-stale" and read.body == good.body
    assert isinstance(read.error, RuntimeError)
    assert view.stats.build_errors == 1 and "database on fire" in (view.stats.last_error or "")
    clock.advance(61)
    with pytest.raises(BuildError, match="stale_if_error"):
        await view.get()


async def test_a_failed_background_refresh_backs_off(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="always")
    view, core, _ = two_sections(keeper, Policy.swr(60))
    await view.get()
    core.fail = RuntimeError("nope")
    revs.revisions["t:a"] = 1
    for _ in range(5):
        assert (await view.get()).status == "stale"
        await keeper.wait_idle()
    assert core.calls == 2  # one refresh, then backing off instead of one per read
    clock.advance(1.5)
    await view.get()
    await keeper.wait_idle()
    assert core.calls == 3


async def test_database_outage_serves_within_stale_if_error(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="always")
    view, _, _ = two_sections(keeper, Policy.strict(stale_if_error=30))
    await view.get()
    revs.fail = ConnectionError("db down")
    read = await view.get()
    assert read.status == "error-stale"
    assert keeper.stats.probe_errors == 1
    clock.advance(31)
    with pytest.raises(RevisionSourceError):
        await view.get()


async def test_refresh_rebuilds_and_stores(revs: MemoryRevisions) -> None:
    keeper = Keeper(revs)
    view, core, tail = two_sections(keeper)
    await view.get()
    read = await view.get(refresh=True)
    assert read.status == "miss" and (core.calls, tail.calls) == (2, 2)
    assert (await view.get()).status == "hit"


async def test_resync_interval_bounds_unseen_changes_without_reading_per_hit(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="interval", resync_interval=2.0)
    view, _, _ = two_sections(keeper)
    await view.get()
    reads = revs.reads
    for _ in range(100):
        await view.get()
    assert revs.reads == reads  # hits read nothing
    clock.advance(2.0)
    await view.get()
    assert revs.reads == reads + 1


async def test_keyed_and_per_principal_views(revs: MemoryRevisions) -> None:
    keeper = Keeper(revs)

    async def build(ctx: BuildContext) -> dict[str, Any]:
        return {"key": ctx.key, "who": ctx.principal}

    mine = keeper.view("mine", build, sources=["t:a"], per_principal=True)
    alice = await mine.get("k", principal="alice")
    bob = await mine.get("k", principal="bob")
    assert alice.value == {"key": "k", "who": "alice"} and bob.value["who"] == "bob"
    assert alice.etag != bob.etag
    with pytest.raises(ConfigurationError, match="per-principal"):
        await mine.get("k")
    keyed = keeper.view("keyed", build, sources=["t:a"])
    assert (await keyed.get(1)).value["key"] == 1 and (await keyed.get(2)).value["key"] == 2


async def test_configuration_errors_are_clear(revs: MemoryRevisions) -> None:
    keeper = Keeper(revs)
    b = Builder("x")
    keeper.view("v", b, sources=["t:a"])
    with pytest.raises(DuplicateViewError):
        keeper.view("v", b, sources=["t:a"])
    with pytest.raises(UnknownViewError, match="registered: v"):
        keeper.get_view("nope")
    with pytest.raises(ConfigurationError):
        keeper.view("w")
    with pytest.raises(ConfigurationError):
        keeper.view("w", b, sources=["t:a"], public=True, per_principal=True)


async def test_unencodable_values_and_overlapping_sections_fail_the_build(
    revs: MemoryRevisions,
) -> None:
    keeper = Keeper(revs, policy=Policy.strict())

    async def bad(ctx: BuildContext) -> object:
        return object()

    with pytest.raises(BuildError) as info:
        await keeper.view("bad", bad, sources=["t:a"]).get()
    assert isinstance(info.value.__cause__, EncodeError)
    dup = keeper.view(
        "dup", sections={"a": Section(Builder("x"), ["t:a"]), "b": Section(Builder("x"), ["t:b"])}
    )
    with pytest.raises(BuildError, match="both return x"):
        await dup.get()


async def test_keeper_without_revision_source_learns_from_publish() -> None:
    keeper = Keeper()
    b = Builder("x")
    view = keeper.view("v", b, sources=["t:a"])
    await view.get()
    assert (await view.get()).status == "hit"
    await keeper.bump("t:a")
    assert (await view.get()).status == "miss" and b.calls == 2
    stats = keeper.snapshot().to_dict()
    assert stats["views"]["v"]["reads"] == {"miss": 2, "hit": 1}


async def test_bounds_count_from_the_last_confirmation_not_the_build(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="always")
    view, _, _ = two_sections(keeper, Policy.strict(stale_if_error=30))
    await view.get()
    for _ in range(10):  # an hour of reads that find the entry current
        clock.advance(360)
        assert (await view.get()).status == "hit"
    revs.fail = ConnectionError("db down")
    assert (await view.get()).status == "error-stale"  # confirmed 0 s ago, built 1 h ago
    clock.advance(31)
    with pytest.raises(RevisionSourceError):
        await view.get()


async def test_version_is_part_of_the_etag(revs: MemoryRevisions) -> None:
    b = Builder("x")
    v1 = Keeper(revs).view("v", b, sources=["t:a"])
    v2 = Keeper(revs).view("v", b, sources=["t:a"], version="2")
    assert (await v1.get()).etag != (await v2.get()).etag


async def test_a_causal_token_is_never_answered_stale(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="interval", resync_interval=60)
    view, core, _ = two_sections(keeper, Policy.swr(60))
    await view.get()
    revs.revisions["t:a"] = 3  # written by another instance, not heard of here
    assert (await view.get()).status == "hit"
    core.value = 3
    read = await view.get(min_revision={"t:a": 3, "t:other": 9})
    assert read.status == "section" and read.value["core"] == 3
    assert (await view.get()).status == "hit"


async def test_a_token_from_the_future_does_not_rebuild_every_read(
    revs: MemoryRevisions,
) -> None:
    keeper = Keeper(revs, probe="interval")
    view, core, _ = two_sections(keeper)
    await view.get()
    for _ in range(3):
        assert (await view.get(min_revision={"t:a": 99})).status == "hit"
    assert core.calls == 1


async def test_a_resync_timer_that_fires_early_still_ends_the_interval(
    revs: MemoryRevisions, clock: FakeClock
) -> None:
    keeper = Keeper(revs, clock=clock, probe="interval", resync_interval=1.0)
    view, _, _ = two_sections(keeper)
    await view.get()
    await view.get()
    reads = revs.reads
    clock.advance(0.999)
    timer = keeper.tracker._timer
    assert timer is not None
    timer.callback()  # fires a millisecond early, as uvloop's millisecond clock can
    await view.get()
    assert revs.reads == reads + 1  # the interval ended with the timer: revisions re-read
    clock.advance(1.0)  # and the next interval is timed again
    await view.get()
    assert revs.reads == reads + 2
