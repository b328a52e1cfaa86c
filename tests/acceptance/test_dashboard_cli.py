"""``freshkeep demo`` and the dashboard: a token generated when none is configured, and the
URL printed to open it (the configured secret itself is never printed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from freshkeep import cli

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The application ``freshkeep demo`` would serve (uvicorn does not start)."""
    import uvicorn

    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.delenv("FRESHKEEP_ADMIN_TOKEN", raising=False)
    return apps


def test_demo_generates_a_token_and_prints_the_dashboard_url(
    served: list[Any], tmp_path: Path
) -> None:
    args = ["demo", "--db", str(tmp_path / "hub.db"), "--port", "8123"]
    result = runner.invoke(cli.app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    found = re.search(r"^dashboard: http://127\.0\.0\.1:8123/freshkeep\?token=(\S+)$",
                      result.output, re.M)  # fmt: skip
    assert found, result.output
    (app,) = served
    assert app.state.dashboard.token == found.group(1)
    assert len(found.group(1)) >= 32
    assert app.state.sessions.admin_token == found.group(1)  # the same admin token

    again = runner.invoke(cli.app, args, env=WIDE)
    other = re.search(r"token=(\S+)", again.output)
    assert other and other.group(1) != found.group(1)  # a new one per run


def test_a_configured_token_is_used_and_not_printed(served: list[Any], tmp_path: Path) -> None:
    env = WIDE | {"FRESHKEEP_ADMIN_TOKEN": "configured-secret"}
    result = runner.invoke(cli.app, ["demo", "--db", str(tmp_path / "hub.db")], env=env)
    assert result.exit_code == 0, result.output
    assert "dashboard: http://127.0.0.1:8000/freshkeep?token=$FRESHKEEP_ADMIN_TOKEN" in (
        result.output
    )
    assert "configured-secret" not in result.output
    (app,) = served
    assert app.state.dashboard.token == "configured-secret"
