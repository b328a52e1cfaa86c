"""``freshkeep jobs status | schema | worker``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from freshkeep import cli
from tests.integration.jobs_app import make_queue

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.jobs_app:make_queue"


def test_schema_and_status(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    made = runner.invoke(cli.app, ["jobs", "schema", "--db", db], env=WIDE)
    assert made.exit_code == 0, made.output
    assert "schema ready (sql)" in made.output
    empty = runner.invoke(cli.app, ["jobs", "status", "--db", db], env=WIDE)
    assert empty.exit_code == 0 and "no jobs" in empty.output

    async def enqueue() -> None:
        os.environ["JOBS_DB"] = db
        try:
            queue = make_queue()
        finally:
            del os.environ["JOBS_DB"]
        for i in range(3):
            await queue.enqueue("touch", {"path": str(tmp_path / f"t{i}")})
        await queue.aclose()

    asyncio.run(enqueue())
    shown = runner.invoke(cli.app, ["jobs", "status"], env={**WIDE, "FRESHKEEP_JOBS_URL": db})
    assert shown.exit_code == 0, shown.output
    assert "touch" in shown.output and "waiting" in shown.output and "3" in shown.output


def test_worker_needs_a_queue() -> None:
    bad = runner.invoke(cli.app, ["jobs", "worker", "--app", "nocolon"], env=WIDE)
    assert bad.exit_code == 2 and "module:attribute" in bad.output
    missing = runner.invoke(cli.app, ["jobs", "worker", "--app", "tests.nope:x"], env=WIDE)
    assert missing.exit_code == 2 and "cannot load" in missing.output
    wrong = runner.invoke(cli.app, ["jobs", "worker", "--app", "os:sep"], env=WIDE)
    assert wrong.exit_code == 2 and "not a JobQueue" in wrong.output


def test_worker_runs_jobs_until_sigterm(tmp_path: Path) -> None:
    db = str(tmp_path / "w.db")
    marker = tmp_path / "done"

    async def enqueue() -> None:
        os.environ["JOBS_DB"] = db
        try:
            queue = make_queue()
        finally:
            del os.environ["JOBS_DB"]
        await queue.enqueue("touch", {"path": str(marker)})
        await queue.aclose()

    asyncio.run(enqueue())
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshkeep.cli", "jobs", "worker", "--app", APP],
        cwd=ROOT,
        env={**os.environ, **WIDE, "JOBS_DB": db},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(3000):
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert marker.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "worker on sql: tasks touch" in out
    assert "stopped: 1 done, 0 failed" in out
