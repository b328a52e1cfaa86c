"""Smoke run of ``freshkeep bench --quick``: it finishes and writes well-formed outputs.

No assertion on speed: the figures of a loaded CI machine say nothing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

MODES = {"floor", "freshkeep", "freshkeep-fastapi", "ttl", "maxprobe", "uncached"}


def test_quick_bench_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        "-m",
        "freshkeep.integrations.cli",
        "bench",
        "--quick",
        "--out",
        str(out),
        "--read-seconds",
        "0.5",
        "--write-seconds",
        "1",
        "--seed-tasks",
        "200",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (tmp_path / "benchmarks").exists()  # --out given: nothing else written

    data = json.loads((out / "results.json").read_text())
    assert data["preset"] == "quick"
    assert data["machine"]["cores"]
    names = {c["name"] for c in data["library"]["cases"]}
    assert {"dict", "await", "freshkeep", "stale", "section_core", "miss"} <= names
    for case in data["library"]["cases"]:
        assert case["n_samples"] > 0 and case["median_ns"] > 0, case
    statuses = {c["name"]: c["statuses"] for c in data["library"]["cases"]}
    assert set(statuses["stale"]) == {"stale"}
    assert set(statuses["miss"]) == {"miss"}

    modes = data["service"]["modes"]
    assert set(modes) == MODES
    for name, mode in modes.items():
        for phase in ("read", "write"):
            assert mode[phase]["requests"] > 0, (name, phase)
            assert mode[phase]["errors"] == 0, (name, phase)
        assert mode["write"]["writes"]["count"] > 0
        fresh = mode["write"]["freshness"]
        assert (fresh is None) == (name == "floor")
    # Local writes are read-your-writes: freshkeep never serves them stale.
    assert modes["freshkeep"]["write"]["freshness"]["beyond_bound"] == 0
    assert {t["target"] for t in data["targets"]}

    report = (out / "results.md").read_text()
    for heading in ("## Library level", "### Read phase", "### Write phase", "## Targets"):
        assert heading in report
    assert "| freshkeep |" in report
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
