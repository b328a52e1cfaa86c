"""The processing runner: precheck without reading, hash before reprocessing, failures recorded
per item with backoff, processors isolated, one run per processor at a time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from freshkeep.exceptions import (
    DuplicateNameError,
    ProcessorBusy,
    UnknownProcessorError,
)
from freshkeep.processing import (
    Item,
    MemoryProcessingState,
    Outcome,
    Pipeline,
    ProcessContext,
    Processor,
    sha256_file,
)
from freshkeep.testing import FakeClock

OLD_NS = 1_600_000_000 * 10**9  # well outside the racy window


class Recorder(Processor):
    """Counts what it processes; raises on the keys in ``fail``."""

    def __init__(self, name: str, root: Path, pattern: str = "**/*.txt") -> None:
        self.name, self.root, self.pattern = name, root, pattern
        self.seen: list[str] = []
        self.fail: set[str] = set()

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if item.key in self.fail:
            raise ValueError(f"cannot read {item.key}")
        self.seen.append(item.key)
        return Outcome({"bytes": item.size}, {"hash": ctx.content_hash})


class CountingHasher:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, path: Path) -> str:
        self.calls += 1
        return await sha256_file(path)


def write(path: Path, text: str, mtime_ns: int = OLD_NS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def make_pipeline(**kw: object) -> tuple[Pipeline, CountingHasher, FakeClock]:
    hasher, clock = CountingHasher(), FakeClock()
    options: dict[str, object] = {"hasher": hasher, "clock": clock, "racy_window": 0.0}
    options.update(kw)
    return Pipeline(MemoryProcessingState(), **options), hasher, clock  # type: ignore[arg-type]


async def test_touch_is_hashed_not_reprocessed_and_a_change_is_reprocessed(
    tmp_path: Path,
) -> None:
    write(tmp_path / "a.txt", "alpha")
    write(tmp_path / "b.txt", "beta")
    pipeline, _, _ = make_pipeline()
    proc = pipeline.register(Recorder("p", tmp_path))
    await pipeline.run("p")
    assert sorted(proc.seen) == ["a.txt", "b.txt"]

    os.utime(tmp_path / "a.txt", ns=(OLD_NS + 10**9, OLD_NS + 10**9))  # touch
    touched = await pipeline.run("p")
    assert (touched.hashed, touched.unchanged, touched.processed) == (1, 1, 0)
    assert (touched.skipped, len(proc.seen)) == (1, 2)
    again = await pipeline.run("p")  # the new mtime was recorded: not hashed again
    assert (again.skipped, again.hashed) == (2, 0)

    write(tmp_path / "b.txt", "BETA", mtime_ns=OLD_NS + 2 * 10**9)
    changed = await pipeline.run("p")
    assert (changed.hashed, changed.processed, changed.unchanged) == (1, 1, 0)
    assert proc.seen[-1] == "b.txt"


async def test_same_size_rewrite_with_same_mtime_is_caught_within_the_racy_window(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh.txt"
    path.write_text("one")  # mtime: now
    pipeline, _, _ = make_pipeline(racy_window=3600.0)
    proc = pipeline.register(Recorder("p", tmp_path))
    await pipeline.run("p")
    st = path.stat()
    path.write_text("two")  # same size; force the same mtime
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = await pipeline.run("p")
    assert (second.hashed, second.processed) == (1, 1)
    assert proc.seen == ["fresh.txt", "fresh.txt"]


async def test_a_failing_item_is_recorded_retried_after_backoff_and_isolated(
    tmp_path: Path,
) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / f"{name}.txt", name)
    pipeline, _, clock = make_pipeline(retry_backoff=10.0, max_retry_backoff=15.0)
    state = pipeline.state
    assert isinstance(state, MemoryProcessingState)
    bad = pipeline.register(Recorder("bad", tmp_path))
    good = pipeline.register(Recorder("good", tmp_path))
    assert isinstance(bad, Recorder) and isinstance(good, Recorder)
    await pipeline.run("good")
    good_rows = {k: v for k, v in state.rows.items() if k[0] == "good"}

    bad.fail = {"b.txt"}
    first = await pipeline.run("bad")
    assert (first.processed, first.failed) == (2, 1)
    assert "ValueError: cannot read b.txt" in first.errors["b.txt"]
    row = state.rows[("bad", "b.txt")]
    assert row.attempts == 1 and row.last_error is not None and row.processed_at is None
    assert row.retry_at == clock.time() + 10.0

    clock.advance(5)
    early = await pipeline.run("bad")  # not retried on every tick
    assert (early.deferred, early.failed, early.hashed) == (1, 0, 0)
    assert early.skips["backoff"] == 1

    clock.advance(5)
    retried = await pipeline.run("bad")
    assert (retried.failed, retried.hashed) == (1, 1)
    row = state.rows[("bad", "b.txt")]
    assert row.attempts == 2 and row.retry_at == clock.time() + 15.0  # doubled, capped

    bad.fail = set()
    clock.advance(15)
    healed = await pipeline.run("bad")
    assert healed.processed == 1
    row = state.rows[("bad", "b.txt")]
    assert (row.attempts, row.last_error, row.retry_at) == (0, None, None)
    assert {k: v for k, v in state.rows.items() if k[0] == "good"} == good_rows
    assert sorted(good.seen) == ["a.txt", "b.txt", "c.txt"]  # processed once, never again


async def test_a_failed_item_whose_file_changes_is_retried_at_once(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    pipeline, _, _ = make_pipeline(retry_backoff=1000.0)
    proc = pipeline.register(Recorder("p", tmp_path))
    assert isinstance(proc, Recorder)
    proc.fail = {"a.txt"}
    assert (await pipeline.run("p")).failed == 1
    proc.fail = set()
    write(tmp_path / "a.txt", "fixed", mtime_ns=OLD_NS + 10**9)
    assert (await pipeline.run("p")).processed == 1


async def test_marks_are_written_in_batches_and_state_is_loaded_once(tmp_path: Path) -> None:
    for i in range(10):
        write(tmp_path / f"{i}.txt", str(i))
    pipeline, _, _ = make_pipeline(batch_size=4)
    state = pipeline.state
    assert isinstance(state, MemoryProcessingState)
    pipeline.register(Recorder("p", tmp_path))
    seen: list[int] = []
    stats = await pipeline.run("p", progress=lambda s: seen.append(s.scanned))
    assert stats.processed == 10 and (state.loads, state.saves) == (1, 3)
    assert seen[-1] == 10
    await pipeline.run("p")
    assert (state.loads, state.saves) == (2, 3)  # nothing changed: nothing written


async def test_registry_names_and_errors(tmp_path: Path) -> None:
    pipeline, _, _ = make_pipeline()
    pipeline.register(Recorder("b", tmp_path))
    pipeline.register(Recorder("a", tmp_path))
    assert pipeline.names() == ["a", "b"]
    with pytest.raises(DuplicateNameError):
        pipeline.register(Recorder("a", tmp_path))
    with pytest.raises(UnknownProcessorError, match="no processor named 'zzz'") as info:
        await pipeline.run("zzz")
    assert "known: a, b" in str(info.value)
    empty = await pipeline.run("a")  # tmp_path holds no *.txt
    assert empty.scanned == 0
    missing = Recorder("m", tmp_path / "nope")
    pipeline.register(missing)
    assert (await pipeline.run("m")).scanned == 0


class Blocking(Processor):
    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "slow", root, "*.txt"
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.explode = False

    def items(self):  # type: ignore[no-untyped-def]
        if self.explode:
            raise RuntimeError("the root is unreadable")
        return super().items()

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        self.entered.set()
        await self.release.wait()
        return Outcome()


async def test_a_second_concurrent_run_gets_processor_busy_and_the_lock_is_always_freed(
    tmp_path: Path,
) -> None:
    write(tmp_path / "a.txt", "a")
    pipeline, _, _ = make_pipeline()
    proc = Blocking(tmp_path)
    pipeline.register(proc)
    first = asyncio.create_task(pipeline.run("slow"))
    await proc.entered.wait()
    assert pipeline.running == {"slow"}
    with pytest.raises(ProcessorBusy) as info:
        await pipeline.run("slow")
    assert info.value.processor == "processor:slow"
    proc.release.set()
    assert (await first).processed == 1
    assert pipeline.running == set()

    proc.explode = True  # an exception escaping the run
    with pytest.raises(RuntimeError, match="unreadable"):
        await pipeline.run("slow")
    proc.explode = False
    write(tmp_path / "b.txt", "b")
    proc.entered.clear()
    proc.release.clear()
    cancelled = asyncio.create_task(pipeline.run("slow"))
    await proc.entered.wait()
    cancelled.cancel()  # a cancelled run frees it too
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    proc.release.set()
    stats = await pipeline.run("slow")
    assert stats.processed == 1 and pipeline.last_stats["slow"] is stats


async def test_a_failing_state_store_fails_the_run_not_the_lock(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    pipeline, _, _ = make_pipeline()
    pipeline.register(Recorder("p", tmp_path))
    state = pipeline.state
    assert isinstance(state, MemoryProcessingState)
    state.fail = OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        await pipeline.run("p")
    state.fail = None
    assert (await pipeline.run("p")).processed == 1


async def test_sha256_file_hashes_big_files_in_a_thread(tmp_path: Path) -> None:
    import hashlib

    big = tmp_path / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 7)
    big.write_bytes(data)
    assert await sha256_file(big) == hashlib.sha256(data).hexdigest()


def test_items_match_the_glob_per_segment_and_stream(tmp_path: Path) -> None:
    for rel in ("a.txt", "x/b.txt", "x/y/c.txt", "x/y/d.log", "z/e.txt", ".h/f.txt"):
        write(tmp_path / rel, rel)
    (tmp_path / "dir.txt").mkdir()  # a directory whose name matches: not an item

    def keys(pattern: str) -> list[str]:
        proc = Recorder("p", tmp_path, pattern)
        return sorted(i.key for i in proc.items())

    assert keys("**/*.txt") == [".h/f.txt", "a.txt", "x/b.txt", "x/y/c.txt", "z/e.txt"]
    assert keys("*/*.txt") == [".h/f.txt", "x/b.txt", "z/e.txt"]
    assert keys("x/**/*.log") == ["x/y/d.log"]
    assert keys("x/y/c.txt") == ["x/y/c.txt"]
    assert keys("*.txt") == ["a.txt"]
    item = next(iter(Recorder("p", tmp_path, "a.txt").items()))
    assert item.path == tmp_path / "a.txt" and (item.size, item.mtime_ns) == (5, OLD_NS)
    assert list(Recorder("p", tmp_path / "missing", "**/*").items()) == []
