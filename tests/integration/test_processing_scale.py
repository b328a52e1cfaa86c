"""A large tree on a real filesystem: the second tick reads no file."""

from __future__ import annotations

import builtins
import io
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_processing import Recorder, make_pipeline, write


async def test_a_stable_tree_of_10000_files_is_not_read_on_the_second_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(10_000):
        d = tmp_path / f"u{i % 50}"
        if i < 50:
            d.mkdir()
        write(d / f"{i}.txt", f"line {i}\n")
    pipeline, hasher, _ = make_pipeline()
    proc = pipeline.register(Recorder("count", tmp_path))
    assert isinstance(proc, Recorder)
    first = await pipeline.run("count")
    assert (first.scanned, first.processed, first.hashed) == (10_000, 10_000, 10_000)
    assert hasher.calls == 10_000

    opened: list[object] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kw: Any) -> Any:
        opened.append(file)
        return real_open(file, *args, **kw)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    second = await pipeline.run("count")
    monkeypatch.undo()
    assert opened == []  # not one file was opened
    assert (second.scanned, second.skipped, second.hashed) == (10_000, 10_000, 0)
    assert (second.unchanged, second.processed, second.failed) == (0, 0, 0)
    assert hasher.calls == 10_000  # no file content was read
    assert len(proc.seen) == 10_000
    assert second.skips["mtime_unchanged"] == 10_000
