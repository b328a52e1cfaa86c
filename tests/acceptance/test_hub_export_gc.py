"""Collecting one topic's exports in the hub: ``POST /admin/exports/gc?topic=ID`` (admin
token) and ``freshkeep gc --prefix 'ID@'``; the GC of a topic raced by its writes, prebuild
jobs and reads (SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import update
from typer.testing import CliRunner

from freshkeep import cli
from freshkeep.artifacts import artifact_objects_table, artifacts_table
from freshkeep.demo import get_hub, hub_app
from freshkeep.demo.exports import EXPORT_CACHE, export_prefix
from freshkeep.demo.hub import Hub
from freshkeep.demo.settings import HubSettings
from freshkeep.exceptions import ConfigurationError
from tests.integration.hub_export_gc import (
    AUTH,
    GRACE,
    JSON,
    TOKEN,
    TTL,
    race_topic_gc,
    rows,
    stored,
)

WIDE = {"COLUMNS": "200"}


@asynccontextmanager
async def running(
    db: Path, *, token: str | None = TOKEN, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Hub]]:
    s = HubSettings(
        admin_token=SecretStr(token) if token else None,
        processing_interval=0,
        jobs_poll_interval=0.05,
        **settings,
    )
    async with hub_app(str(db), seed_tasks=2000, settings=s) as app:  # 10 topics
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            yield http, get_hub(app)


async def build_and_expire(http: httpx.AsyncClient, hub: Hub, topics: list[int]) -> list[str]:
    """Build the topics' exports, then make them long expired with objects untouched since.
    Their keys."""
    keys = []
    for topic in topics:
        r = await http.get(f"/topics/{topic}/export", headers=JSON)
        assert r.status_code == 200, r.text
        keys.append(r.json()["key"])
    async with hub.engine.begin() as conn:
        await conn.execute(update(artifacts_table).values(expires_at=0.0))
        await conn.execute(update(artifact_objects_table).values(touched_at=0.0, created_at=0.0))
    return keys


async def test_the_route_needs_the_admin_token(tmp_path: Path) -> None:
    async with running(tmp_path / "hub.db") as (http, _):
        r = await http.post("/admin/exports/gc")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await http.post("/admin/exports/gc", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await http.post("/admin/exports/gc", params={"topic": "x"}, headers=AUTH)
        assert r.status_code == 422
    async with running(tmp_path / "off.db", token=None) as (http, _):
        r = await http.post("/admin/exports/gc", headers=AUTH)
        assert r.status_code == 403 and "FRESHKEEP_ADMIN_TOKEN" in r.json()["detail"]


async def test_collecting_one_topic_takes_its_expired_exports_only(tmp_path: Path) -> None:
    async with running(tmp_path / "hub.db") as (http, hub):
        assert await build_and_expire(http, hub, [1, 10, 2]) == ["1@0", "10@0", "2@0"]
        before = await stored(hub)
        assert len(before) == 3
        r = await http.post("/admin/exports/gc", params={"topic": 1}, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["cache"], body["topic"], body["prefix"]) == (EXPORT_CACHE, 1, "1@")
        assert (body["rows"], body["objects"], body["orphans"]) == (1, 1, 0)
        assert set(await rows(hub)) == {"10@0", "2@0"}  # "1" would have matched topic 10
        assert len(await stored(hub)) == 2
        r = await http.post("/admin/exports/gc", headers=AUTH)  # the whole cache
        assert r.status_code == 200 and r.json()["prefix"] is None
        assert (r.json()["rows"], r.json()["objects"]) == (2, 2)
        assert await rows(hub) == {} and await stored(hub) == set()


def test_export_prefix_is_the_topic_and_its_separator() -> None:
    assert export_prefix(7) == "7@"
    for bad in (-1, "7", True):
        with pytest.raises(ConfigurationError, match="topic id"):
            export_prefix(bad)  # type: ignore[arg-type]


def test_freshkeep_gc_prefix_collects_one_topic_of_the_hubs_database(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"

    async def setup() -> None:
        async with running(db) as (http, hub):
            await build_and_expire(http, hub, [1, 10])

    asyncio.run(setup())
    result = CliRunner().invoke(cli.app, ["gc", "--db", str(db), "--prefix", "1@"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "keys starting with '1@'" in result.output
    line = next(ln for ln in result.output.splitlines() if EXPORT_CACHE in ln)
    assert [c.strip() for c in line.split("│")[2:5]] == ["1", "1", "0"], line
    again = CliRunner().invoke(cli.app, ["gc", "--db", str(db)], env=WIDE)
    line = next(ln for ln in again.output.splitlines() if EXPORT_CACHE in ln)
    assert [c.strip() for c in line.split("│")[2:4]] == ["1", "1"], line  # topic 10's


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "--prefix is empty: give the start of the keys to collect"),
        ("k" * 1025, "--prefix has 1025 characters but a key has at most 1024"),
        ("7", "--prefix '7' also matches topics 70, 71, …: the hub's export keys are"),
    ],
)
def test_a_bad_prefix_is_one_line_with_the_fix(tmp_path: Path, prefix: str, message: str) -> None:
    db = tmp_path / "hub.db"
    db.touch()
    result = CliRunner().invoke(cli.app, ["gc", "--db", str(db), "--prefix", prefix], env=WIDE)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert db.stat().st_size == 0  # refused before the database was opened


async def test_a_topics_gc_raced_by_its_writes_jobs_and_reads_loses_nothing(
    tmp_path: Path,
) -> None:
    async with running(
        tmp_path / "hub.db",
        artifact_ttl=TTL,
        artifact_orphan_grace=GRACE,
        artifact_max_stale_on_error=0.0,
    ) as (http, hub):
        await race_topic_gc(http, hub, topic=1, other=2)
