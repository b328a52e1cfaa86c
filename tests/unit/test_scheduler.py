"""The scheduler on a fake clock: one run per job at a time, cadence kept on failure and while
another job hangs, overruns reported and cancelled, misfires and locks counted."""

from __future__ import annotations

import asyncio
import random

import pytest

from freshkeep.exceptions import ConfigurationError, DuplicateNameError, ProcessorBusy
from freshkeep.processing import LocalLocks
from freshkeep.scheduler import Scheduler
from freshkeep.testing import FakeClock


async def settle() -> None:
    """Let the tasks a tick created run until they block."""
    for _ in range(5):
        await asyncio.sleep(0)


class Gate:
    """A job that counts its starts and waits for ``open``."""

    def __init__(self) -> None:
        self.starts = 0
        self.started = asyncio.Event()
        self.open = asyncio.Event()

    async def __call__(self) -> None:
        self.starts += 1
        self.started.set()
        await self.open.wait()


async def test_a_job_taking_10x_its_cadence_is_never_launched_twice() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    gate = Gate()
    job = sched.add("slow", gate, every=1.0)
    assert sched.tick() == ["slow"]
    await gate.started.wait()
    for _ in range(10):
        clock.advance(1.0)
        assert sched.tick() == []
        await settle()
    assert gate.starts == 1 and job.running
    assert job.skips["in_flight"] == 10  # each coalesced slot counted once
    gate.open.set()
    await sched.wait_idle()
    assert job.last_run == 10.0 and job.next_due == 11.0 and job.last_duration == 10.0
    clock.advance(1.0)
    assert sched.tick() == ["slow"]
    await sched.wait_idle()
    assert gate.starts == 2


async def test_a_failing_job_advances_last_run_and_keeps_its_cadence() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    calls: list[float] = []

    async def broken() -> None:
        calls.append(clock.monotonic())
        raise RuntimeError("always")

    job = sched.add("broken", broken, every=5.0)
    for _ in range(20):  # 20 ticks, one per second
        sched.tick()
        await sched.wait_idle()
        clock.advance(1.0)
    assert calls == [0.0, 5.0, 10.0, 15.0]
    assert job.failures == 4 and job.last_run == 15.0
    assert job.last_error == "RuntimeError: always"


async def test_other_jobs_keep_their_cadence_while_one_hangs() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    hung = Gate()
    fast: list[float] = []

    async def quick() -> None:
        fast.append(clock.monotonic())

    sched.add("hung", hung, every=1.0)
    sched.add("fast", quick, every=2.0)
    for _ in range(10):
        sched.tick()
        await settle()
        clock.advance(1.0)
    assert fast == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert hung.starts == 1
    hung.open.set()
    await sched.wait_idle()


async def test_an_overrun_is_reported_and_cancelled_when_asked() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    report_only, cancel = Gate(), Gate()
    a = sched.add("report", report_only, every=1.0, max_runtime=3.0)
    b = sched.add("cancel", cancel, every=1.0, max_runtime=3.0, cancel_overrun=True)
    sched.tick()
    await settle()
    for _ in range(4):
        clock.advance(1.0)
        sched.tick()
        await settle()
    assert (a.overruns, b.overruns) == (1, 1)  # reported once per run
    assert a.running and not b.running
    assert b.last_error == "cancelled" and b.failures == 1 and b.last_run == 4.0
    clock.advance(1.0)
    assert sched.tick() == ["cancel"]  # the job is not blocked forever
    await settle()
    assert cancel.starts == 2
    await sched.stop()
    assert not a.running and not b.running


async def test_a_run_later_than_its_misfire_grace_is_skipped() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock)
    runs: list[float] = []

    async def job_fn() -> None:
        runs.append(clock.monotonic())

    job = sched.add("j", job_fn, every=10.0, misfire_grace=2.0)
    sched.tick()
    await sched.wait_idle()
    clock.advance(15.0)  # due at 10, now 15: 5 s late
    assert sched.tick() == []
    assert job.skips["misfire"] == 1 and job.next_due == 25.0
    clock.advance(11.0)  # 26: 1 s late, within the grace
    assert sched.tick() == ["j"]
    await sched.wait_idle()
    assert runs == [0.0, 26.0]


async def test_a_job_held_elsewhere_is_skipped_as_locked() -> None:
    clock = FakeClock()
    locks = LocalLocks()
    sched = Scheduler(clock=clock, locks=locks)
    runs = 0

    async def job_fn() -> None:
        nonlocal runs
        runs += 1

    async def busy() -> None:
        raise ProcessorBusy(processor="p")

    job = sched.add("j", job_fn, every=1.0)
    other = sched.add("busy", busy, every=1.0)
    handle = await locks.acquire("job:j", 60.0)  # "another instance" holds it
    sched.tick()
    await sched.wait_idle()
    assert runs == 0 and job.skips["locked"] == 1 and job.last_run == 0.0
    assert other.skips["locked"] == 1 and other.failures == 0
    assert handle is not None
    await locks.release("job:j", handle)
    clock.advance(1.0)
    sched.tick()
    await sched.wait_idle()
    assert runs == 1 and locks.held == {}


async def test_jitter_delays_and_bad_jobs_are_refused() -> None:
    clock = FakeClock()
    sched = Scheduler(clock=clock, rng=random.Random(7))

    async def nothing() -> None:
        return None

    job = sched.add("j", nothing, every=10.0, jitter=2.0, delay=1.0)
    assert 1.0 <= job.next_due <= 3.0
    with pytest.raises(DuplicateNameError):
        sched.add("j", nothing, every=1.0)
    with pytest.raises(ConfigurationError):
        sched.add("k", nothing, every=0)
    assert sched.snapshot()["j"]["runs"] == 0


async def test_start_and_stop_on_the_real_clock() -> None:
    sched = Scheduler(poll=0.01)
    ran = asyncio.Event()

    async def job_fn() -> None:
        ran.set()

    sched.add("j", job_fn, every=0.01)
    await sched.start()
    await asyncio.wait_for(ran.wait(), 10)
    await sched.stop()
    assert sched.jobs["j"].runs >= 1
