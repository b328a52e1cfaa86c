"""``freshkeep --app module:attribute``: process, gc, health and jobs on a user's application
(tests/apps/notes.py), through the real command in a subprocess; and the errors, one line
each, naming the cause and the fix."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freshkeep.demo.app import create_app
from freshkeep.demo.exports import EXPORT_CACHE
from freshkeep.integrations.app import discover
from tests.apps.notes import create as create_notes

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.apps.notes:create"


def freshkeep(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "NOTES_DIR": str(tmp_path),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "TERM": "dumb",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "freshkeep.cli", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "notes" / "b.txt").write_text("three\n")
    return tmp_path


def test_process_runs_a_processor_of_the_app(notes: Path) -> None:
    first = freshkeep(notes, "--app", APP, "process", "lines")
    assert first.returncode == 0, first.stderr
    assert "processor lines" in first.stdout
    assert "processed │ 2" in first.stdout or "processed  2" in first.stdout.replace("│", " ")
    # the state is the app's (a SQL table): a second run, from an async factory, skips them
    again = freshkeep(notes, "--app", "tests.apps.notes:create_async", "process", "lines")
    assert again.returncode == 0, again.stderr
    assert "processed │ 0" in again.stdout or "processed  0" in again.stdout.replace("│", " ")

    unknown = freshkeep(notes, "--app", APP, "process", "nope")
    assert unknown.returncode == 2
    assert "no processor named 'nope' in tests.apps.notes:create (known: lines)" in unknown.stderr

    demo_only = freshkeep(notes, "--app", APP, "process", "lines", "--db", "x.db")
    assert demo_only.returncode == 2 and "--db and --root are the demo hub's" in demo_only.stderr

    # both runs are in the app's run history, newest first
    listed = freshkeep(notes, "--app", APP, "process", "--history", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [(r["processor"], r["via"], r["processed"]) for r in runs] == [
        ("lines", "cli", 0),
        ("lines", "cli", 2),
    ]
    none = freshkeep(notes, "--app", "tests.apps.notes:keeper_only", "process", "--history")
    assert none.returncode == 2 and "no pipeline keeps a run history" in none.stderr


def test_jobs_gc_and_health_from_the_environment_variable(notes: Path) -> None:
    env = {"FRESHKEEP_APP": APP}
    schema = freshkeep(notes, "jobs", "schema", env=env)
    assert schema.returncode == 0, schema.stderr
    assert "schema ready (sql)" in schema.stdout
    gc = freshkeep(notes, "gc", env=env)  # creates the artifact tables too
    assert gc.returncode == 0, gc.stderr
    assert "notes-export" in gc.stdout
    missing = freshkeep(notes, "gc", "--cache", "nope", env=env)
    assert missing.returncode == 2
    assert "no artifact cache named 'nope'" in missing.stderr and "notes-export" in missing.stderr

    health = freshkeep(notes, "health", env=env)
    assert health.returncode == 0, health.stderr
    assert "ok from --app tests.apps.notes:create" in health.stdout
    assert "the notes are readable" in health.stdout
    as_json = freshkeep(notes, "health", "--json", env=env)
    assert as_json.returncode == 0 and '"status": "ok"' in as_json.stdout

    status = freshkeep(notes, "jobs", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "no jobs" in status.stdout


def test_gc_of_one_prefix_of_the_apps_cache(notes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTES_DIR", str(notes))

    async def build_and_expire() -> None:
        app = create_notes()
        try:
            await app.exports.create_tables()
            await app.exports.prebuild(["a.txt", "b.txt"])
            from sqlalchemy import update

            from freshkeep.artifacts import artifact_objects_table, artifacts_table

            async with app.queue.engine.begin() as conn:
                await conn.execute(update(artifacts_table).values(expires_at=0.0))
                await conn.execute(update(artifact_objects_table).values(touched_at=0.0))
            # both expired long ago, their objects untouched since
        finally:
            await app.queue.aclose()
            await app.queue.engine.dispose()

    asyncio.run(build_and_expire())
    scoped = freshkeep(notes, "--app", APP, "gc", "--prefix", "b.")
    assert scoped.returncode == 0, scoped.stderr
    assert "keys starting with 'b.'" in scoped.stdout
    line = next(ln for ln in scoped.stdout.splitlines() if "notes-export" in ln)
    assert [c.strip() for c in line.split("│")[2:4]] == ["1", "1"], line
    empty = freshkeep(notes, "--app", APP, "gc", "--prefix", "")
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines() == [
        "error: --prefix is empty: give the start of the keys to collect (e.g. --prefix "
        "'tenant-7/'), or leave --prefix out to collect every key"
    ]


@pytest.mark.parametrize("attr", ["KEEPER", "HOLDER", "SERVICE", "keeper_only"])
def test_a_keeper_an_object_holding_one_or_a_function_returning_one(
    tmp_path: Path, attr: str
) -> None:
    health = freshkeep(tmp_path, "--app", f"tests.apps.notes:{attr}", "health")
    assert health.returncode == 0, health.stderr  # a bare keeper has health checks
    assert f"ok from --app tests.apps.notes:{attr}" in health.stdout


def test_gc_needs_a_cache_and_jobs_a_queue(tmp_path: Path) -> None:
    spec = "tests.apps.notes:keeper_only"
    gc = freshkeep(tmp_path, "--app", spec, "gc")
    assert gc.returncode == 2 and "has no artifact cache to collect" in gc.stderr
    jobs = freshkeep(tmp_path, "--app", spec, "jobs", "status")
    assert jobs.returncode == 2 and "--app has no job queue" in jobs.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "--app must look like module:attribute"),
        ("tests.apps.nowhere:app", "no module named 'tests.apps.nowhere'; check the module path"),
        ("tests.apps.notes:missing", "module 'tests.apps.notes' has no attribute 'missing'"),
        ("tests.apps.notes:NOT_AN_APP", "is a int with no freshkeep component; give a Keeper"),
        ("tests.apps.notes:needs_arguments", "is a callable that needs arguments"),
        ("tests.apps.notes:broken", "calling it failed: RuntimeError: the notes database is gone"),
        ("tests.apps.notes:EMPTY_SERVICE", "is a Starlette with no freshkeep component"),
    ],
)
def test_a_bad_app_is_one_line_naming_the_cause(tmp_path: Path, spec: str, message: str) -> None:
    result = freshkeep(tmp_path, "--app", spec, "process", "lines")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_discover_finds_the_demo_hubs_components_in_a_fastapi_app(tmp_path: Path) -> None:
    app = create_app(str(tmp_path / "hub.db"), seed_tasks=0)
    found = discover(app, spec="demo")
    assert found.keeper is app.state.hub.keeper
    assert found.processor_names() == ["evidence", "usage"]
    assert list(found.artifacts) == [EXPORT_CACHE]
    assert found.job_queues == (app.state.hub.exports.queue,)


def test_jobs_worker_runs_the_apps_queue_until_sigterm(notes: Path) -> None:
    os.environ["NOTES_DIR"] = str(notes)
    try:
        app = create_notes()
    finally:
        del os.environ["NOTES_DIR"]

    async def enqueue() -> None:
        await app.queue.create_tables()
        await app.exports.create_tables()
        await app.exports.enqueue_prebuild(app.queue, ["a.txt"], change_id="one")
        await app.queue.aclose()

    asyncio.run(enqueue())
    proc = subprocess.Popen(
        [sys.executable, "-m", "freshkeep.cli", "--app", APP, "jobs", "worker"],
        cwd=notes,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            "NOTES_DIR": str(notes),
            "NO_COLOR": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    objects = notes / "artifacts"
    try:
        for _ in range(3000):  # bounded: the worker writes the object, then exits on SIGTERM
            if any(p.is_file() for p in objects.rglob("*")) or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert any(p.is_file() for p in objects.rglob("*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "worker on sql: tasks artifacts.notes-export.gc, artifacts.notes-export.prebuild" in out
    assert "stopped: 1 done, 0 failed" in out
