"""The ``freshkeep`` command: help, version, bad databases, and ``freshkeep demo`` for real."""

from __future__ import annotations

from pathlib import Path

import httpx
from typer.testing import CliRunner

from freshkeep import __version__, cli
from freshkeep.demo import DEFAULT_SEED_TASKS

from .demo_process import demo_process

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


def test_freshkeep_demo_serves_the_summary(tmp_path: Path) -> None:
    with demo_process(tmp_path, seed_tasks=50) as demo:
        with httpx.Client(base_url=demo.base, timeout=2.0) as client:
            response = client.get("/state/summary")
            assert response.status_code == 200, demo.output()
            assert response.headers["x-freshkeep-cache"] == "miss"
            assert response.json()["totals"]["tasks"] == 50
            again = client.get("/state/summary")
            assert again.headers["x-freshkeep-cache"] == "hit"
    db = tmp_path / "demo.db"
    log = demo.log
    assert db.exists()
    assert "freshkeep demo hub" in log.read_text()


def test_a_busy_port_fails_at_once_before_seeding(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        db = tmp_path / "busy.db"
        result = runner.invoke(cli.app, ["demo", "--port", str(port), "--db", str(db)], env=WIDE)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]
    assert not db.exists()  # nothing seeded, nothing created


def test_migrate_asks_which_database_and_says_which_it_used(tmp_path: Path) -> None:
    clean: dict[str, str | None] = {"FRESHKEEP_DATABASE_URL": None}  # unset
    asked = runner.invoke(cli.app, ["migrate"], env=WIDE | clean)
    assert asked.exit_code == 2
    assert asked.output.strip().splitlines() == [
        "error: which database? pass --db PATH_OR_URL (or set FRESHKEEP_DATABASE_URL)"
    ]
    db = tmp_path / "app.db"
    done = runner.invoke(cli.app, ["migrate", "--db", str(db)], env=WIDE)
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0] == f"database: sqlite:///{db}"


def test_a_mistyped_database_path_creates_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for args in (["gc", "--db", str(typo)], ["jobs", "status", "--db", str(typo)]):
        result = runner.invoke(cli.app, args, env=WIDE)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "no SQLite database at" in lines[0], lines
        assert not typo.exists()
