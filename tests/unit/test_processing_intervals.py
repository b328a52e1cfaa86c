"""One interval per processor: its own, else the shared default; the scheduler runs each at its
own cadence, and each processor's health grace follows its interval. The hub's settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from freshkeep.demo.settings import HubSettings
from freshkeep.exceptions import ConfigurationError, UnknownProcessorError
from freshkeep.health import Health, Level, env_names
from freshkeep.processing import (
    Item,
    Outcome,
    Pipeline,
    ProcessContext,
    Processor,
    ProcessorIntervals,
    schedule_processors,
)
from freshkeep.scheduler import Scheduler
from freshkeep.testing import FakeClock

NOW = 1_700_000_000.0


class Files(Processor):
    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root, self.pattern = name, root, "*.txt"

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        return Outcome({"files": 1})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env_names():
        monkeypatch.delenv(var, raising=False)


def pipeline_of(root: Path, *names: str, clock: FakeClock) -> Pipeline:
    pipeline = Pipeline(clock=clock, racy_window=0)
    for name in names:
        pipeline.register(Files(name, root))
    return pipeline


def test_own_interval_else_the_default() -> None:
    intervals = ProcessorIntervals(60, {"usage": 300, "evidence": 0})
    assert (intervals.of("usage"), intervals.of("evidence"), intervals.of("other")) == (
        300.0,
        0.0,
        60.0,
    )
    assert intervals.scheduled(["evidence", "other", "usage"]) == {"other": 60.0, "usage": 300.0}
    assert ProcessorIntervals(0, {"usage": 5}).scheduled(["usage", "x"]) == {"usage": 5.0}
    intervals.check(["usage", "evidence", "other"])
    with pytest.raises(ConfigurationError, match=r"unknown processor\(s\) 'evidence'"):
        intervals.check(["usage"])
    with pytest.raises(TypeError):
        intervals.own["usage"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("default", "own"),
    [(-1, {}), (float("nan"), {}), (True, {}), (60, {"x": -5}), (60, {"": 5}), (60, {"x": "5"})],
)
def test_bad_intervals_are_refused(default: float, own: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        ProcessorIntervals(default, own)


async def test_each_processor_runs_at_its_own_interval(tmp_path: Path) -> None:
    clock = FakeClock(wall=NOW)
    pipeline = pipeline_of(tmp_path, "fast", "slow", "off", clock=clock)
    scheduler = Scheduler(clock=clock)
    added = schedule_processors(scheduler, pipeline, ProcessorIntervals(10, {"slow": 30, "off": 0}))
    assert added == {"fast": 10.0, "slow": 30.0}
    assert {n: j.every for n, j in scheduler.jobs.items()} == added
    assert scheduler.tick() == []  # first runs one interval from now
    started: list[str] = []
    for _ in range(6):
        clock.advance(10)
        started += scheduler.tick()
        await scheduler.wait_idle()
    assert started.count("fast") == 6 and started.count("slow") == 2 and "off" not in started
    assert pipeline.last_stats["slow"].processor == "slow"

    with pytest.raises(ConfigurationError, match="'typo'"):
        schedule_processors(Scheduler(clock=clock), pipeline, ProcessorIntervals(10, {"typo": 1}))
    with pytest.raises(UnknownProcessorError):
        schedule_processors(Scheduler(clock=clock), pipeline, 10, names=["nope"])
    now = Scheduler(clock=clock)
    assert schedule_processors(now, pipeline, 5.0, names=["off"], delay=False) == {"off": 5.0}
    assert now.tick() == ["off"]  # one shared interval, and at once
    await now.wait_idle()


async def test_the_health_grace_follows_each_processors_interval(tmp_path: Path) -> None:
    """The same backlog (one file changed 45 s ago) is late for a processor that runs every
    10 s (grace 20 s) and on time for one that runs every 30 s (grace 60 s)."""
    (tmp_path / "a.txt").write_text("a")
    os.utime(tmp_path / "a.txt", (NOW - 2000, NOW - 2000))
    clock = FakeClock(wall=NOW - 1000)
    pipeline = pipeline_of(tmp_path, "fast", "slow", clock=clock)
    await pipeline.run("fast")
    await pipeline.run("slow")
    (tmp_path / "b.txt").write_text("b")
    os.utime(tmp_path / "b.txt", (NOW - 45, NOW - 45))
    clock.advance(1000)

    intervals = ProcessorIntervals(10, {"slow": 30})
    health = Health(clock=clock)
    watches = {
        name: health.watch_processor(pipeline, name, cadence=every)
        for name, every in intervals.scheduled(pipeline.names()).items()
    }
    assert {n: w.effective_grace() for n, w in watches.items()} == {"fast": 20.0, "slow": 60.0}
    report = await health.run()
    fast, slow = report.get("processor:fast"), report.get("processor:slow")
    assert fast is not None and fast.level is Level.WARNING and "every 10s" in fast.detail
    assert slow is not None and slow.level is Level.OK
    assert (fast.data["cadence"], slow.data["cadence"]) == (10.0, 30.0)


def test_hub_settings_read_processor_intervals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHKEEP_PROCESSOR_INTERVALS", "usage=300, evidence=0s")
    assert HubSettings.load().processor_intervals == {"usage": 300.0, "evidence": 0.0}
    monkeypatch.setenv("FRESHKEEP_PROCESSOR_INTERVALS", '{"usage": 30.5}')
    assert HubSettings.load().processor_intervals == {"usage": 30.5}
    monkeypatch.setenv("FRESHKEEP_PROCESSOR_INTERVALS", "")
    assert HubSettings.load().processor_intervals == {}
    for bad in ("usage", "usage=-1", "usage=soon", "=5", "{oops"):
        monkeypatch.setenv("FRESHKEEP_PROCESSOR_INTERVALS", bad)
        with pytest.raises(ConfigurationError, match="processor_intervals"):
            HubSettings.load()
    assert HubSettings(processor_intervals={"usage": 5}).processor_intervals == {"usage": 5.0}
