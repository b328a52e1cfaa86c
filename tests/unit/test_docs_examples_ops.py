"""The examples of docs/processing.md and docs/health.md, run as they are written, with the
names their text gives them (a keeper, the pipeline of the processing example, an app)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette

from freshkeep import BuildContext, Keeper, Scheduler, Settings
from freshkeep.health import Level
from tests.docs_blocks import python_block, run_block


@pytest.fixture
def sessions_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory with ``sessions/<user>/<name>.jsonl`` files in it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sessions" / "ana").mkdir(parents=True)
    (tmp_path / "sessions" / "bo").mkdir()
    (tmp_path / "sessions" / "ana" / "one.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    (tmp_path / "sessions" / "bo" / "two.jsonl").write_text('{"b": 1}\n')
    (tmp_path / "sessions" / "bo" / "notes.txt").write_text("not matched\n")
    an_hour_ago = time.time() - 3600  # older than the racy window: a stable tick skips them
    for path in (tmp_path / "sessions").rglob("*"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    yield tmp_path


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


def keeper_with(token: str | None) -> Keeper:
    return Keeper(settings=Settings(admin_token=token))


# -- processing.md -----------------------------------------------------------------------------


async def test_the_processor_counts_the_lines_of_each_file(
    sessions_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = await run_block(python_block("processing.md", "processor"), {})
    assert capsys.readouterr().out == "2 0 0 2 0\n"  # scanned skipped unchanged processed failed
    pipeline = found["pipeline"]
    states = await pipeline.state.load("lines")
    assert {key: state.counts for key, state in states.items()} == {
        "ana/one.jsonl": {"lines": 3},
        "bo/two.jsonl": {"lines": 1},
    }
    again = await pipeline.run("lines")  # nothing changed: not even opened
    assert (again.skipped, again.processed, again.hashed) == (2, 0, 0)


async def test_the_processor_routes_run_a_processor_behind_the_token(sessions_dir: Path) -> None:
    pipeline = (await run_block(python_block("processing.md", "processor"), {}))["pipeline"]
    scheduler = Scheduler()
    scheduler.add("lines", lambda: pipeline.run("lines"), every=60)
    block = python_block("processing.md", "processor-routes")
    names = {"pipeline": pipeline, "scheduler": scheduler}
    on, off = FastAPI(), FastAPI()
    await run_block(block, {**names, "keeper": keeper_with("s3cret"), "app": on})
    await run_block(block, {**names, "keeper": keeper_with(None), "app": off})
    bearer = {"authorization": "Bearer s3cret"}
    async with client(on) as http:
        refused = await http.get("/admin/processors")
        ran = await http.post("/admin/processors/lines/run", headers=bearer)
        listing = await http.get("/admin/processors", headers=bearer)
    assert refused.status_code == 401
    assert ran.status_code == 200 and ran.json()["skipped"] == 2  # the block's run came first
    lines = listing.json()["lines"]
    assert lines["last_run"]["skipped"] == 2 and lines["schedule"]["every"] == 60
    async with client(off) as http:  # no admin token: the routes are off
        assert (await http.get("/admin/processors", headers=bearer)).status_code == 403


# -- health.md ---------------------------------------------------------------------------------


async def test_a_health_run_prints_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    keeper = Keeper()

    async def build(ctx: BuildContext) -> dict[str, int]:
        return {"n": 1}

    await keeper.view("summary", build, sources=["table:tasks"]).get()
    found = await run_block(python_block("health.md", "run-checks"), {"keeper": keeper})
    assert found["report"].status == "ok"
    printed = capsys.readouterr().out.splitlines()
    assert "view:summary ok " in [line[: len("view:summary ok ")] for line in printed]
    assert len(printed) == len(found["report"].checks) >= 2  # the view and the bus


async def test_an_added_check_sets_the_headline() -> None:
    class Broker:
        def __init__(self, depth: int) -> None:
            self.waiting = depth

        async def depth(self, queue: str) -> int:
            assert queue == "emails"
            return self.waiting

    block = python_block("health.md", "add-check")
    calm, busy = Keeper(), Keeper()
    await run_block(block, {"keeper": calm, "broker": Broker(12)})
    await run_block(block, {"keeper": busy, "broker": Broker(5000)})
    report = await calm.health.run()
    checks = {c.name: c for c in report.checks}
    assert report.status == "ok"
    assert (checks["queue:emails"].detail, checks["queue:emails"].data) == (
        "12 emails waiting",
        {"depth": 12},
    )
    assert (checks["disk"].level, checks["disk"].detail) == (Level.OK, "plenty of space")
    report = await busy.health.run()
    assert report.status == "degraded"
    assert {c.name: c.level for c in report.checks}["queue:emails"] == Level.WARNING


async def test_the_metrics_endpoint_serves_the_keepers_counters(sessions_dir: Path) -> None:
    pipeline = (await run_block(python_block("processing.md", "processor"), {}))["pipeline"]
    keeper, app = Keeper(), Starlette()

    async def build(ctx: BuildContext) -> dict[str, int]:
        return {"n": 1}

    view = keeper.view("summary", build, sources=["table:tasks"])
    await run_block(
        python_block("health.md", "metrics"), {"keeper": keeper, "pipeline": pipeline, "app": app}
    )
    await view.get()
    await view.get()
    async with client(app) as http:
        scrape = await http.get("/metrics")
    assert scrape.status_code == 200
    assert 'freshkeep_view_reads_total{status="hit",view="summary"} 1.0' in scrape.text
    assert 'freshkeep_view_reads_total{status="miss",view="summary"} 1.0' in scrape.text
    assert 'processor="lines"' in scrape.text


async def test_the_dashboard_is_off_without_a_token(sessions_dir: Path) -> None:
    pipeline = (await run_block(python_block("processing.md", "processor"), {}))["pipeline"]
    block = python_block("health.md", "dashboard")
    names = {"pipeline": pipeline, "scheduler": Scheduler()}
    off, on = Starlette(), Starlette()
    await run_block(block, {**names, "keeper": keeper_with(None), "app": off})
    await run_block(block, {**names, "keeper": keeper_with("s3cret"), "app": on})
    async with client(off) as http:
        page = await http.get("/freshkeep")
        status = await http.get("/freshkeep/status.json")
    assert (page.status_code, status.status_code) == (403, 403)
    async with client(on) as http:
        signed_out = await http.get("/freshkeep")
        status = await http.get(
            "/freshkeep/status.json", headers={"authorization": "Bearer s3cret"}
        )
    assert signed_out.status_code == 401
    assert status.status_code == 200
    assert "lines" in str(status.json())
