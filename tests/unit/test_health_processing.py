"""Processor lag and stuck items, over real files (mtimes set with os.utime), a real SQL state
store (SQLite) and a fake clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep import ConfigurationError, DuplicateNameError, Keeper
from freshkeep.health import Health, Level, assess, env_names
from freshkeep.processing import Item, ItemState, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.processing.sql import PROCESSING_STATE_TABLE, SQLProcessingState

NOW = 1_800_000_000.0
MIN, HOUR = 60.0, 3600.0
CADENCE = 60.0  # grace 2 min, stuck threshold 8 min


class Sessions(Processor):
    """Processes ``*.jsonl`` files; fails on the keys in ``failing``."""

    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "sessions", root, "*.jsonl"
        self.failing: set[str] = set()

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if item.key in self.failing:
            raise ValueError(f"cannot parse {item.key}")
        return Outcome({"bytes": item.size})


class FakeClock:
    """A wall clock the test sets (runs happen "hours ago", then health looks at NOW)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env_names():
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[SQLProcessingState]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}")
    store = SQLProcessingState(engine)
    await store.create_table()
    yield store
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "sessions"
    path.mkdir()
    return path


@pytest.fixture
def pipeline(state: SQLProcessingState, clock: FakeClock, root: Path) -> Pipeline:
    p = Pipeline(state, clock=clock)
    p.register(Sessions(root))
    return p


@pytest.fixture
def health(pipeline: Pipeline, clock: FakeClock) -> Health:
    h = Health(clock=clock)
    h.watch_processor(pipeline, "sessions", cadence=CADENCE, job="sessions-every-minute")
    return h


def write(root: Path, name: str, age: float, text: str = '{"a": 1}\n') -> Path:
    """A file modified ``age`` seconds before NOW."""
    path = root / name
    path.write_text(text)
    os.utime(path, (NOW - age, NOW - age))
    return path


async def run_at(pipeline: Pipeline, clock: FakeClock, ago: float) -> None:
    """Run the processor as if ``ago`` seconds before NOW."""
    clock.now = NOW - ago
    await pipeline.run("sessions")
    clock.now = NOW


async def test_no_files_is_ok(health: Health) -> None:
    report = await health.run()
    assert report.status == "ok"
    assert report.get("processor:sessions").level is Level.OK  # type: ignore[union-attr]
    assert report.get("processor:sessions:stuck").level is Level.OK  # type: ignore[union-attr]


async def test_files_a_minute_old_processed_30s_ago_is_ok(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    for i in range(3):
        write(root, f"s{i}.jsonl", 1 * MIN)
    await run_at(pipeline, clock, 30)
    report = await health.run()
    lag = report.get("processor:sessions")
    assert lag is not None and lag.level is Level.OK and "up to date" in lag.detail
    assert lag.data["last_processed_age"] == 30 and lag.data["items"] == 3
    assert report.status == "ok"


async def test_files_2h_old_last_processed_3h_ago_is_a_warning_naming_the_job(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    for i in range(2):
        write(root, f"s{i}.jsonl", 4 * HOUR)
    await run_at(pipeline, clock, 3 * HOUR)
    for i in range(2):  # both changed 2 h ago; nothing ran since
        write(root, f"s{i}.jsonl", 2 * HOUR, '{"a": 2}\n')
    report = await health.run()
    lag = report.get("processor:sessions")
    assert lag is not None and lag.level is Level.WARNING
    assert "'sessions-every-minute'" in lag.detail and "'sessions'" in lag.detail
    assert "2h 0m behind" in lag.detail and "3h 0m ago" in lag.detail
    assert lag.data["lag"] == 2 * HOUR and lag.data["waiting"] == 2
    assert report.status == "degraded"
    await pipeline.run("sessions")  # it catches up
    report = await health.run()
    assert report.get("processor:sessions").level is Level.OK  # type: ignore[union-attr]


async def test_files_never_processed_is_a_warning(health: Health, root: Path) -> None:
    write(root, "new.jsonl", 10)
    report = await health.run()
    lag = report.get("processor:sessions")
    assert lag is not None and lag.level is Level.WARNING
    assert "none ever processed" in lag.detail and "'sessions-every-minute'" in lag.detail
    assert report.status == "degraded"


async def test_files_changed_within_the_grace_are_ok(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    write(root, "old.jsonl", 2 * HOUR)
    await run_at(pipeline, clock, HOUR)
    write(root, "fresh.jsonl", 90)  # waiting 90 s < grace 120 s, after an idle hour
    lag = (await health.run()).get("processor:sessions")
    assert lag is not None and lag.level is Level.OK and "1 item(s) waiting" in lag.detail


async def test_an_old_unprocessed_file_beside_processed_newer_ones_is_info(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    write(root, "newer.jsonl", 10 * MIN)
    await run_at(pipeline, clock, 5 * MIN)
    write(root, "copied-in.jsonl", 5 * HOUR)  # arrived with an old mtime after the run
    report = await health.run()
    stuck = report.get("processor:sessions:stuck")
    assert stuck is not None and stuck.level is Level.INFO
    assert "'copied-in.jsonl'" in stuck.detail and "5h 0m" in stuck.detail
    assert stuck.data["item"] == "copied-in.jsonl" and stuck.data["age"] == 5 * HOUR
    assert report.get("processor:sessions").level is Level.OK  # type: ignore[union-attr]
    assert report.status == "ok"  # info never degrades the headline


async def test_a_failing_old_file_is_info_with_its_error(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    processor = pipeline.get("sessions")
    assert isinstance(processor, Sessions)
    processor.failing.add("bad.jsonl")
    write(root, "bad.jsonl", 5 * HOUR)
    write(root, "good.jsonl", 4 * HOUR)
    await run_at(pipeline, clock, 4 * HOUR)
    write(root, "later.jsonl", 20 * MIN)
    await run_at(pipeline, clock, 10 * MIN)
    report = await health.run()
    stuck = report.get("processor:sessions:stuck")
    assert stuck is not None and stuck.level is Level.INFO
    assert "'bad.jsonl'" in stuck.detail and "cannot parse bad.jsonl" in stuck.detail
    assert report.status == "ok"


async def test_an_unprocessed_file_under_the_threshold_is_ok(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    write(root, "newer.jsonl", 2 * MIN)
    await run_at(pipeline, clock, 1 * MIN)
    write(root, "copied-in.jsonl", 5 * MIN)  # 5 min < 8 min (4 x grace)
    stuck = (await health.run()).get("processor:sessions:stuck")
    assert stuck is not None and stuck.level is Level.OK and stuck.data["threshold"] == 8 * MIN


async def test_the_stuck_threshold_from_the_environment(
    pipeline: Pipeline, clock: FakeClock, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHKEEP_HEALTH_STUCK_THRESHOLD", "60")
    health = Health(clock=clock)
    health.watch_processor(pipeline, "sessions", cadence=CADENCE)
    write(root, "newer.jsonl", 2 * MIN)
    await run_at(pipeline, clock, 1 * MIN)
    write(root, "copied-in.jsonl", 5 * MIN)
    stuck = (await health.run()).get("processor:sessions:stuck")
    assert stuck is not None and stuck.level is Level.INFO
    assert "5m 0s" in stuck.detail and "FRESHKEEP_HEALTH_STUCK_THRESHOLD" in stuck.detail


async def test_the_lag_grace_from_the_environment(
    health: Health, pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    write(root, "old.jsonl", 2 * HOUR)
    await run_at(pipeline, clock, HOUR)
    write(root, "fresh.jsonl", 90)
    health.configure({"FRESHKEEP_HEALTH_LAG_GRACE": "60"})
    lag = (await health.run()).get("processor:sessions")
    assert lag is not None and lag.level is Level.WARNING and lag.data["grace"] == 60


async def test_a_state_store_that_fails_makes_both_checks_errors(
    health: Health, root: Path, state: SQLProcessingState
) -> None:
    write(root, "a.jsonl", 60)
    health.add("other", lambda: Level.OK)
    engine = state.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"DROP TABLE {PROCESSING_STATE_TABLE}")
    report = await health.run()
    for name in ("processor:sessions", "processor:sessions:stuck"):
        check = report.get(name)
        assert check is not None and check.level is Level.ERROR and "check failed" in check.detail
    assert report.get("other").level is Level.OK  # type: ignore[union-attr]
    assert report.status == "unhealthy"


async def test_watch_a_state_store_with_items(
    state: SQLProcessingState, clock: FakeClock, root: Path
) -> None:
    processor = Sessions(root)
    health = Health(clock=clock)
    with pytest.raises(ConfigurationError, match="items="):
        health.watch_processor(state, "sessions", cadence=CADENCE)
    health.watch_processor(state, "sessions", cadence=CADENCE, items=processor.items)
    with pytest.raises(DuplicateNameError):
        health.watch_processor(state, "sessions", cadence=CADENCE, items=processor.items)
    write(root, "a.jsonl", HOUR)
    report = await health.run()
    assert report.get("processor:sessions").level is Level.WARNING  # type: ignore[union-attr]


async def test_keeper_health_watches_a_pipeline(
    pipeline: Pipeline, clock: FakeClock, root: Path
) -> None:
    keeper = Keeper(clock=clock)
    watch = keeper.health.watch_processor(pipeline, "sessions", cadence=CADENCE)
    assert watch.check_names == ("processor:sessions", "processor:sessions:stuck")
    assert {"processor:sessions", "processor:sessions:stuck", "bus", "store"} <= set(
        keeper.health.names()
    )
    write(root, "a.jsonl", 10)
    assert (await keeper.health.run()).status == "degraded"
    keeper.health.remove("processor:sessions:stuck")
    assert keeper.health.watches == {} and keeper.health.names() == ["bus", "store"]
    assert (await keeper.health.run()).status == "ok"
    await keeper.aclose()


# -- the rule, stated over any items and states ----------------------------------------------------

_items = st.dictionaries(
    st.sampled_from([f"k{i}" for i in range(8)]),
    st.tuples(st.integers(0, 10_000), st.integers(0, 5)),
    max_size=8,
)
_states = st.dictionaries(
    st.sampled_from([f"k{i}" for i in range(8)]),
    st.tuples(
        st.integers(-1, 10_000),
        st.integers(0, 5),
        st.one_of(st.none(), st.integers(0, 10_000)),
        st.booleans(),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(_items, _states)
def test_assess_partitions_the_items(
    items: dict[str, tuple[int, int]], states: dict[str, tuple[int, int, int | None, bool]]
) -> None:
    its = [Item(k, k, m * 10**9, size) for k, (m, size) in items.items()]
    sts = {
        k: ItemState(
            "p",
            k,
            m if m < 0 else m * 10**9,
            size,
            processed_at=None if at is None else float(at),
            last_error="boom" if failed else None,
            retry_at=1.0 if failed else None,
        )
        for k, (m, size, at, failed) in states.items()
    }
    b = assess(its, sts)
    assert b.items == len(its) == b.done + b.unseen + b.failing
    assert b.waiting <= b.unseen
    assert (b.oldest_pending is None) == (b.pending == 0)
    if b.pending == 0:
        assert b.waiting_since is None
    mtimes = {i.key: i.mtime_ns / 1e9 for i in its}
    for i in its:  # an item recorded with its current stat and no failure is done
        s = sts.get(i.key)
        if s is not None and not s.failed and (s.mtime_ns, s.size) == (i.mtime_ns, i.size):
            assert b.oldest_pending != i.key
    if b.oldest_pending is not None:
        assert b.oldest_pending_mtime == mtimes[b.oldest_pending]
        if b.waiting_since is not None:
            assert b.oldest_pending_mtime <= b.waiting_since
    if b.waiting_since is not None:
        assert b.waiting_since in mtimes.values()
        assert b.last_processed_at is None or b.waiting_since > b.last_processed_at
