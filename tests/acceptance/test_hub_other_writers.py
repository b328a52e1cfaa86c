"""Writes by another OS process (a script with the plain ``sqlite3`` module) reach the hub.

After ``freshkeep migrate --db FILE --triggers``, ``freshkeep demo --db FILE`` answers
``/state/summary`` with another program's insert, update and delete within 2 s, and never with
the old totals after that (rule 8).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from freshkeep import cli

from .demo_process import demo_process

WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
TIMEOUT = 2.0


def other_program(db: Path, sql: str) -> None:
    """Run ``sql`` in a process of its own that knows nothing of freshkeep."""
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1])\nc.execute(sys.argv[2])\nc.commit()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db), sql], check=True, timeout=60)


def totals(client: httpx.Client) -> tuple[str, dict[str, Any]]:
    r = client.get("/state/summary")
    assert r.status_code == 200, r.text
    return r.headers["x-freshkeep-cache"], r.json()["totals"]


def wait_for(client: httpx.Client, done: Callable[[dict[str, Any]], bool]) -> float:
    """Seconds until the summary satisfies ``done``; then it never goes back."""
    start = time.monotonic()
    while True:
        _, t = totals(client)
        if done(t):
            break
        assert time.monotonic() - start < TIMEOUT, f"not seen within {TIMEOUT} s: {t}"
        time.sleep(0.05)
    took = time.monotonic() - start
    for _ in range(10):
        status, t = totals(client)
        assert done(t), f"an old value after the new one ({status}): {t}"
    return took


def test_another_process_is_seen_within_two_seconds(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    migrated = CliRunner().invoke(cli.app, ["migrate", "--db", str(db), "--triggers"], env=WIDE)
    assert migrated.exit_code == 0, migrated.output
    with demo_process(tmp_path, seed_tasks=40) as demo, httpx.Client(base_url=demo.base) as client:
        totals(client)
        status, before = totals(client)
        assert status == "hit"
        n = before["tasks"]
        other_program(
            db,
            "INSERT INTO tasks (workstream_id, title, status, created_at, updated_at) "
            "VALUES (1, 'from a script', 'blocked', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        )
        wait_for(client, lambda t: t["tasks"] == n + 1)
        blocked = totals(client)[1]["tasks_by_status"]["blocked"]
        other_program(db, "UPDATE tasks SET status = 'done' WHERE title = 'from a script'")
        wait_for(client, lambda t: t["tasks_by_status"]["blocked"] == blocked - 1)
        other_program(db, "DELETE FROM tasks WHERE title = 'from a script'")
        wait_for(client, lambda t: t["tasks"] == n)
