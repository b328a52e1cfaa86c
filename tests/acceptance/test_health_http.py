"""The hub's health endpoints: the public headline, the admin-only detail, failing checks,
and the processors' lag as session files arrive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from freshkeep import Keeper
from freshkeep.demo import get_hub, hub_app
from freshkeep.demo.settings import HubSettings
from freshkeep.health import Level, env_names
from freshkeep.health.http import health_routes

TOKEN = "s3cret-admin-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env_names():
        monkeypatch.delenv(var, raising=False)


@asynccontextmanager
async def hub(tmp_path: Path, token: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, Keeper]]:
    settings = HubSettings(
        admin_token=token,
        sessions_root=str(tmp_path / "sessions"),
        processing_interval=3600,  # scheduled, but not run during the test
    )
    async with hub_app(str(tmp_path / "hub.db"), seed_tasks=20, settings=settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            yield http, get_hub(app).keeper


async def test_health_is_public_and_the_detail_needs_the_admin_token(tmp_path: Path) -> None:
    async with hub(tmp_path, TOKEN) as (http, _):
        r = await http.get("/health")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert r.json()["status"] == "ok" and set(r.json()) == {"status", "generated_at"}

        r = await http.get("/health/detailed")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "admin bearer token" in r.json()["detail"]
        r = await http.get("/health/detailed", headers={"authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await http.get("/health/detailed", headers={"authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401

        r = await http.get("/health/detailed", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        names = {c["name"] for c in body["checks"]}
        assert {"bus", "store", "processor:evidence", "processor:usage"} <= names
        assert any(n.startswith("view:") for n in names)
        assert body["status"] == "ok" and body["counts"]["ok"] == len(names)


async def test_without_a_token_configured_the_detail_is_off(tmp_path: Path) -> None:
    async with hub(tmp_path, None) as (http, _):
        assert (await http.get("/health")).status_code == 200
        r = await http.get("/health/detailed", headers=AUTH)
        assert r.status_code == 404 and "FRESHKEEP_ADMIN_TOKEN" in r.json()["detail"]


async def test_a_check_that_raises_is_an_error_and_the_endpoint_answers(tmp_path: Path) -> None:
    async with hub(tmp_path, TOKEN) as (http, keeper):

        async def broken() -> Level:
            raise ConnectionError("ledger API refused the connection")

        keeper.health.add("ledger", broken)
        r = await http.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy"
        r = await http.get("/health/detailed", headers=AUTH)
        assert r.status_code == 503
        checks = {c["name"]: c for c in r.json()["checks"]}
        assert checks["ledger"]["level"] == "error"
        assert "ConnectionError: ledger API refused the connection" in checks["ledger"]["detail"]
        assert checks["bus"]["level"] == "ok"  # the other checks still ran


async def test_session_files_waiting_for_their_processors_degrade_the_hub(tmp_path: Path) -> None:
    async with hub(tmp_path, TOKEN) as (http, _):
        r = await http.post("/sessions/ana?name=one.jsonl", content=b'{"type": "text"}\n')
        assert r.status_code == 201
        r = await http.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "degraded"  # 200: not unhealthy
        checks = {
            c["name"]: c
            for c in (await http.get("/health/detailed", headers=AUTH)).json()["checks"]
        }
        for name in ("evidence", "usage"):
            check = checks[f"processor:{name}"]
            assert check["level"] == "warning" and f"job '{name}'" in check["detail"]
        for name in ("evidence", "usage"):
            r = await http.post(f"/admin/processors/{name}/run", headers=AUTH)
            assert r.status_code == 200, r.text
        assert (await http.get("/health")).json()["status"] == "ok"


async def test_the_routes_serve_a_plain_starlette_app() -> None:
    keeper = Keeper()
    keeper.health.add("disk", lambda: ("warning", "disk 91% full", {"used": 0.91}))
    app = Starlette(routes=health_routes(keeper, admin_token="t"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        r = await http.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "degraded"
        r = await http.get("/health/detailed", headers={"authorization": "Bearer t"})
        disk = next(c for c in r.json()["checks"] if c["name"] == "disk")
        assert disk == {
            "name": "disk",
            "level": "warning",
            "detail": "disk 91% full",
            "data": {"used": 0.91},
        }
    await keeper.aclose()
