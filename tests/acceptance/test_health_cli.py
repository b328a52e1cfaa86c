"""``freshkeep health`` against a running hub (``freshkeep demo`` in a subprocess): the table,
and exit codes 0 ok, 1 degraded, 2 unhealthy or unreachable."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from typer.testing import CliRunner

from freshkeep import cli

from .demo_process import demo_process, free_port

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
TOKEN = "cli-admin-token"


@contextmanager
def running_hub(tmp_path: Path, **env: str) -> Iterator[str]:
    """``freshkeep demo`` on a free port; yields its base URL once /health answers."""
    base = {"FRESHKEEP_ADMIN_TOKEN": TOKEN, "FRESHKEEP_PROCESSING_INTERVAL": "3600"}
    with demo_process(tmp_path, seed_tasks=10, env=base | env, ready="/health") as demo:
        yield demo.base


def health(*args: str, **env: str) -> tuple[int, str]:
    clean = {k: None for k in os.environ if k.startswith("FRESHKEEP_")}
    result = runner.invoke(cli.app, ["health", *args], env=clean | WIDE | env)
    return result.exit_code, result.output


def test_exit_codes_follow_the_hub_from_ok_to_degraded(tmp_path: Path) -> None:
    with running_hub(tmp_path) as url:
        code, out = health("--url", url, "--token", TOKEN)
        assert code == 0, out
        assert out.startswith(f"ok from {url}/health/detailed")
        for name in ("bus", "store", "processor:usage", "processor:evidence:stuck"):
            assert name in out

        code, out = health("--url", url)  # no token: the headline only
        assert code == 0 and out.startswith(f"ok from {url}/health "), out
        assert "processor:usage" not in out

        r = httpx.post(f"{url}/sessions/ana?name=s.jsonl", content=b'{"type": "text"}\n')
        assert r.status_code == 201
        code, out = health("--url", url, FRESHKEEP_ADMIN_TOKEN=TOKEN)  # token from the env
        assert code == 1, out
        assert out.startswith("degraded") and "processor:usage" in out
        assert "none ever processed" in out

        code, out = health("--url", url, "--token", TOKEN, "--json")
        assert code == 1
        body = json.loads(out)
        assert body["status"] == "degraded" and body["counts"]["warning"] == 2

        code, out = health("--url", url, "--token", "wrong")
        assert code == 2 and "refused the admin token" in out


def test_exit_2_when_the_hub_is_unhealthy(tmp_path: Path) -> None:
    env = {
        "FRESHKEEP_BUS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "FRESHKEEP_BUS_CONNECT_TIMEOUT": "0.2",
        "FRESHKEEP_HEALTH_BUSES_ERROR_AFTER": "0",
    }
    with running_hub(tmp_path, **env) as url:
        code, out = health("--url", url, "--token", TOKEN)
        assert code == 2, out
        assert out.startswith("unhealthy") and "bus" in out and "reconnecting" in out
        code, _ = health("--url", url)
        assert code == 2


def test_exit_2_with_a_message_when_the_service_cannot_be_reached() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out = health("--url", url)
    assert code == 2 and f"cannot reach {url}/health" in out
    code, out = health("--url", "ftp://example.invalid/")
    assert code == 2 and "not an http(s) URL" in out


def test_the_url_defaults_to_the_service_url_setting() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out = health(FRESHKEEP_SERVICE_URL=url)
    assert code == 2 and url in out
