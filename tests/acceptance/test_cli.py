"""The ``freshkeep`` command: help, version, bad databases, and ``freshkeep demo`` for real."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from freshkeep import __version__
from freshkeep.demo import DEFAULT_SEED_TASKS
from freshkeep.integrations import cli

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def test_demo_help() -> None:
    result = runner.invoke(cli.app, ["demo", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for option in ("--host", "--port", "--db", "--seed-tasks", "--log-level"):
        assert option in result.output
    assert "/state/summary" in result.output
    assert cli.DEFAULT_SEED_TASKS == DEFAULT_SEED_TASKS


def test_top_level_help_lists_the_commands() -> None:
    result = runner.invoke(cli.app, ["--help"], env=WIDE)
    assert result.exit_code == 0
    assert "demo" in result.output and "version" in result.output


def test_version() -> None:
    result = runner.invoke(cli.app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == f"freshkeep {__version__}"


def test_a_bad_db_url_exits_2_with_a_message() -> None:
    result = runner.invoke(cli.app, ["demo", "--db", "nonsense://x"], env=WIDE)
    assert result.exit_code == 2
    assert "cannot use the database URL" in result.output


def test_the_db_url_comes_from_the_environment() -> None:
    env = WIDE | {"FRESHKEEP_DATABASE_URL": "postgresql+asyncpg://u:hidden@127.0.0.1:1/none"}
    result = runner.invoke(cli.app, ["demo"], env=env)
    assert result.exit_code == 2
    assert "cannot open its database" in result.output and "127.0.0.1:1" in result.output
    assert "hidden" not in result.output


def test_a_bad_option_is_a_usage_error() -> None:
    result = runner.invoke(cli.app, ["demo", "--seed-tasks", "-5"], env=WIDE)
    assert result.exit_code == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_freshkeep_demo_serves_the_summary(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "demo.db"
    log = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "freshkeep.integrations.cli", "demo", "--port", str(port)]
    cmd += ["--db", str(db), "--seed-tasks", "50", "--log-level", "warning"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHKEEP_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20.0
        response: httpx.Response | None = None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"freshkeep demo exited:\n{log.read_text()}"
                try:
                    response = client.get("/state/summary")
                except httpx.TransportError:
                    time.sleep(0.1)
                    continue
                if response.status_code == 200:
                    break
            assert response is not None and response.status_code == 200, log.read_text()
            assert response.headers["x-freshkeep-cache"] == "miss"
            assert response.json()["totals"]["tasks"] == 50
            again = client.get("/state/summary")
            assert again.headers["x-freshkeep-cache"] == "hit"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    assert db.exists()
    assert "freshkeep demo hub" in log.read_text()
