"""The keyed level (``freshkeep bench --level keyed``), run briefly: the commands of its section
in ``docs/performance.md``, then the structure of what they write and the invariants that hold
whatever the machine's speed.

Timing-dependent figures (reads/s, how many reads fit between writes, hence hit ratios and
builds) are never compared with a bound. What does not depend on timing: every view answers
the same reads between the same writes, so each view's builds are what the reads and writes
call for (the model of :mod:`freshkeep.bench.keyed`), the builds of a key that was written
are the same in every view, and the per-key views rebuild a subset of what the per-table view
rebuilds (1,024 buckets inside 64 inside the whole table).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import POSTGRES_URL, need_service

DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
MARKER = "<!-- the commands below are run by benchmarks/test_keyed.py -->"
VIEWS = ["per_table", "per_key", "per_key_64"]


def documented_commands() -> list[str]:
    """The ``freshkeep bench`` lines of the shell block that follows :data:`MARKER`."""
    text = DOCS.read_text()
    assert MARKER in text, f"{DOCS.name} has no keyed section marked {MARKER!r}"
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert block is not None
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    commands = [line for line in lines if line.startswith("freshkeep bench")]
    assert commands
    return commands


def check(keyed: dict[str, Any]) -> None:
    """The structure of the keyed level's figures and its timing-independent invariants."""
    views = {v["name"]: v for v in keyed["views"]}
    assert list(views) == VIEWS
    assert views["per_key"]["buckets"] == 1024 and views["per_key_64"]["buckets"] == 64
    assert views["per_table"]["buckets"] is None
    assert keyed["keys"] == 1000 and keyed["batches"] > 0
    writes = keyed["writes"]
    assert writes["count"] == writes["insert"] + writes["update"] > 0
    reads = keyed["batches"] * keyed["batch"]
    for name, v in views.items():
        assert v["reads"] == reads, name  # the same reads in every view
        assert sum(v["statuses"].values()) == reads, name
        assert set(v["statuses"]) <= {"hit", "miss"}, name  # strict: never stale
        # Every read that was not a hit built the key once, and nothing else built.
        assert v["statuses"].get("hit", 0) + v["builds"] == reads, name
        assert v["builds"] == v["model_builds"], name
        assert v["builds"] == v["needed"] + v["false"], name
        assert 0.0 <= v["hit_ratio"] <= 1.0 and v["reads_per_s"] > 0, name
        assert v["hit_us"]["count"] == v["statuses"].get("hit", 0), name
        assert v["builds_per_write"] == pytest.approx(v["builds"] / writes["count"]), name
        # A false invalidation needs a write to another key of the bucket since the last read.
        assert v["false"] <= round(v["sharing_per_write"] * writes["count"]), name
    # A written key is rebuilt at its next read in every view alike.
    assert len({v["needed"] for v in views.values()}) == 1
    table, key, small = (views[n] for n in VIEWS)
    assert key["builds"] <= small["builds"] <= table["builds"]
    assert key["false"] <= small["false"] <= table["false"]
    assert key["hit_ratio"] >= small["hit_ratio"] >= table["hit_ratio"]
    assert table["sharing_per_write"] == keyed["keys"] - 1
    assert key["sharing_per_write"] <= small["sharing_per_write"]


def test_the_documented_commands_run_briefly(tmp_path: Path) -> None:
    for n, command in enumerate(documented_commands()):
        args = shlex.split(command)[2:]
        if "--db" in args:
            need_service("PostgreSQL", POSTGRES_URL, 5432)
            args[args.index("--db") + 1] = POSTGRES_URL
        out = tmp_path / f"run{n}"
        # The documented durations are shortened: a later option wins.
        cmd = [sys.executable, "-m", "freshkeep.cli", "bench", *args]
        cmd += ["--keyed-seconds", "1.5", "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, command + "\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
        data = json.loads((out / "results.json").read_text())
        assert set(data) >= {"keyed", "machine", "config"}
        assert "library" not in data and "service" not in data
        check(data["keyed"])
        assert data["keyed"]["database"].startswith("PostgreSQL" if "--db" in args else "SQLite")
        report = (out / "results.md").read_text()
        assert "## Keyed level: 1,000 keys read by key under 4 writes/s" in report
        assert "| per-key, 64 buckets |" in report
        assert "something else moved its revisions" not in report
        assert max(len(line) for line in report.splitlines()) <= 100
        assert not (out / "results.png").exists()  # nothing of the keyed level is drawn


def test_a_database_other_than_postgresql_is_refused(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "freshkeep.cli", "bench", "--level", "keyed"]
    cmd += ["--db", str(tmp_path / "x.db"), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert "postgresql://" in proc.stdout + proc.stderr
    assert not (tmp_path / "x.db").exists()
