"""The dashboard in a real browser: ``freshkeep demo`` prints its URL with a generated token,
headless Chromium opens it, and the page follows a write to the hub as it happens.

Needs Chromium (``/usr/bin/chromium``, Debian's ``chromium`` package) and Playwright for
Python (no browser download: Playwright drives the system Chromium). Skipped without them,
failed when ``FRESHKEEP_REQUIRE_SERVICES=1``. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REQUIRE_SERVICES

from .demo_process import DemoProcess, demo_process, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


def chromium_path() -> str:
    """The system Chromium, or skip (fail when services are required)."""
    found = os.environ.get("FRESHKEEP_CHROMIUM") or shutil.which("chromium")
    missing = []
    if found is None:
        missing.append("chromium (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if REQUIRE_SERVICES:
            pytest.fail(message + " and FRESHKEEP_REQUIRE_SERVICES=1")
        pytest.skip(message)
    assert found is not None
    return found


@dataclass
class Demo:
    """A running ``freshkeep demo`` and the dashboard URL it printed."""

    process: DemoProcess
    dashboard: str

    @property
    def base(self) -> str:
        return self.process.base

    @property
    def log(self) -> Path:
        return self.process.log

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """``freshkeep demo`` on a free port, without an admin token configured."""
    with demo_process(tmp_path, seed_tasks=300) as running:
        printed = re.search(
            rf"dashboard: ({re.escape(running.base)}/freshkeep\?token=\S+)", running.output()
        )
        assert printed, f"no dashboard URL printed:\n{running.output()}"
        yield Demo(running, printed.group(1))


def test_the_page_follows_a_write_live(demo: Demo) -> None:
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    with httpx.Client(base_url=demo.base, timeout=10.0) as http:
        first = http.get("/state/summary")
        assert first.status_code == 200 and first.headers["x-freshkeep-cache"] == "miss"
        assert http.get("/state/summary").headers["x-freshkeep-cache"] == "hit"
        before = first.headers["x-freshkeep-revision"]
        # Without the token, neither the page nor its data is served.
        assert http.get("/freshkeep").status_code == 401
        assert http.get("/freshkeep/status.json").status_code == 401

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []  # exceptions thrown by the page's script
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(demo.dashboard)
                # The token was exchanged for a cookie and left the address bar.
                assert page.url == f"{demo.base}/freshkeep"
                cookies = page.context.cookies()
                (cookie,) = [c for c in cookies if c["name"] == "freshkeep_dashboard"]
                assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

                row = page.locator('tr[data-view="summary"]')
                revision = row.locator('td[data-field="revision"]')
                reads = row.locator('td[data-field="reads"]')
                expect(revision).to_have_text(before)
                expect(reads.locator('[data-status="miss"]')).to_have_text("miss 1")
                expect(reads.locator('[data-status="hit"]')).to_have_text("hit 1")
                expect(page.locator("#conn")).to_have_class(re.compile(r"\blive\b"))
                expect(page.locator("#headline")).to_have_text(
                    re.compile(r"^(ok|degraded|unhealthy)$")
                )
                expect(page.locator('tr[data-check="view:summary"]')).to_have_count(1)
                expect(page.locator('tr[data-processor="evidence"]')).to_have_count(1)
                expect(page.locator("#updated")).to_have_text(re.compile(r"ago"))

                # A write over HTTP, then a read: the progress section applies the new row (a
                # delta, not a build).
                topic = http.get("/topics").json()[0]["id"]
                progress = {
                    "topic_id": topic,
                    "event_type": "note",
                    "summary": "dashboard test",
                    "author": "ci",
                }
                assert http.post("/progress", json=progress).status_code == 201
                read = http.get("/state/summary")
                assert read.headers["x-freshkeep-cache"] == "section"
                assert read.headers["x-freshkeep-reason"] == "delta"
                after = read.headers["x-freshkeep-revision"]
                assert after != before

                expect(revision).to_have_text(after)
                expect(reads.locator('[data-status="section"]')).to_have_text("section 1")
                expect(row.locator('td[data-field="builds"]')).to_contain_text("progress 1")
                shot = ARTIFACTS / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"dashboard screenshot: {shot}")

                # The hub goes away: the page says so and keeps the last data.
                demo.stop()
                expect(page.locator("#conn")).to_have_class(re.compile(r"\berror\b"))
                expect(page.locator("#conn")).to_contain_text("update failed")
                expect(revision).to_have_text(after)
                down = ARTIFACTS / "dashboard-disconnected.png"
                page.screenshot(path=str(down), full_page=True)
                print(f"dashboard screenshot (hub stopped): {down}")
                assert errors == []
            finally:
                browser.close()


def test_the_first_paint_shows_the_data_before_any_poll(demo: Demo) -> None:
    """The page renders the status embedded in it: with every poll of status.json refused,
    the views, health and processors still show, and the page keeps polling."""
    executable = chromium_path()
    from playwright.sync_api import Route, expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with httpx.Client(base_url=demo.base, timeout=10.0) as http:
        revision = http.get("/state/summary").headers["x-freshkeep-revision"]
    polls: list[str] = []

    def refuse(route: Route) -> None:
        polls.append(route.request.url)
        route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.route("**/freshkeep/status.json", refuse)
            page.goto(demo.dashboard)
            row = page.locator('tr[data-view="summary"]')
            expect(row.locator('td[data-field="revision"]')).to_have_text(revision)
            expect(page.locator('tr[data-check="view:summary"]')).to_have_count(1)
            expect(page.locator("#headline")).to_have_text(re.compile(r"^(ok|degraded|unhealthy)$"))
            expect(page.locator("body")).to_have_attribute("data-initial", "rendered")
            assert "connecting" not in (page.locator("#conn").text_content() or "")
            # Then it polls: the refused poll says so, and the data stays.
            expect(page.locator("#conn")).to_contain_text("update failed")
            assert polls
            expect(row.locator('td[data-field="revision"]')).to_have_text(revision)
            assert errors == []
        finally:
            browser.close()


SESSION_LINES = [
    b'{"type": "user", "message": {"content": "run the tests"}}',
    b'{"type": "tool_use", "name": "bash", "usage": {"input_tokens": 812, "output_tokens": 95}}',
    b'{"type": "tool_result", "content": "===== 148 passed in 9.1s ====="}',
]


@pytest.mark.skipif(
    os.environ.get("FRESHKEEP_DOCS_SCREENSHOT") != "1",
    reason="writes docs/img/dashboard.png: run with FRESHKEEP_DOCS_SCREENSHOT=1",
)
def test_docs_screenshot(tmp_path: Path) -> None:
    """The screenshot of the docs: a hub seeded with 10,000 tasks, after some traffic."""
    executable = chromium_path()
    from playwright.sync_api import expect, sync_playwright

    port, token = free_port(), "docs-screenshot"
    cmd = [sys.executable, "-m", "freshkeep.cli", "demo", "--port", str(port)]
    cmd += ["--db", "hub.db", "--seed-tasks", "10000", "--log-level", "warning"]  # in tmp_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHKEEP_")}
    env["FRESHKEEP_ADMIN_TOKEN"] = token
    env["FRESHKEEP_ARTIFACT_STORAGE_URL"] = "hub-artifacts"  # relative: no temporary path shown
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    running = Demo(proc, base, f"{base}/freshkeep?token={token}", log)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=base, timeout=30.0) as http:
            deadline = time.monotonic() + 120.0
            while True:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                try:
                    if http.get("/state/stats").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            for user, n in (("ana", 3), ("bo", 2)):
                for i in range(n):
                    body = b"\n".join(SESSION_LINES) + (b"\n{broken\n" if i == 2 else b"\n")
                    http.post(f"/sessions/{user}", params={"name": f"s{i}.jsonl"}, content=body)
            for name in ("evidence", "usage"):
                assert http.post(f"/admin/processors/{name}/run", headers=auth).status_code == 200
            for _ in range(40):
                http.get("/state/summary")
            topic = http.get("/topics").json()[0]["id"]
            for i in range(3):
                event = {"topic_id": topic, "event_type": "note", "summary": f"step {i}"}
                http.post("/progress", json=event | {"author": "ana"})
                http.get("/state/summary")
            http.patch("/tasks/17", json={"status": "done"})
            for topic_id in [t["id"] for t in http.get("/topics").json()][:4]:
                http.get(f"/topics/{topic_id}/export", headers={"Accept": "application/json"})
            for _ in range(12):
                http.get("/state/summary")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(running.dashboard)
                    expect(page.locator('tr[data-view="summary"]')).to_have_count(1)
                    expect(page.locator("#conn")).to_have_class(re.compile(r"\blive\b"))
                    page.wait_for_timeout(2000)  # past the change highlight: a calm picture
                    target = ROOT / "docs" / "img" / "dashboard.png"
                    target.parent.mkdir(exist_ok=True)
                    page.screenshot(path=str(target), full_page=True)
                    print(f"docs screenshot: {target}")
                finally:
                    browser.close()
    finally:
        running.stop()


def test_every_section_renders_failures(tmp_path: Path) -> None:
    """A keeper with a failing view, a failing remote, a notifier, an artifact cache and a
    processor with a stuck item: every section of the page shows them, without a script error."""
    executable = chromium_path()
    pytest.importorskip("fsspec")
    import threading
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from typing import Any

    import uvicorn
    from playwright.sync_api import expect, sync_playwright
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette

    from freshkeep import BuildContext, Keeper, Policy
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.integrations.dashboard import Dashboard
    from freshkeep.processing import Item, Outcome, Pipeline, ProcessContext, Processor

    token = "t0ken"
    failing = {"view": False}

    async def build(ctx: BuildContext) -> dict[str, Any]:
        if failing["view"]:
            raise RuntimeError("summary query timed out")
        return {"n": 1}

    async def fetch(key: Any) -> list[str]:
        raise ConnectionError("tracker unreachable")

    async def pack(key: str) -> bytes:
        if key == "bad":
            raise RuntimeError("disk full")
        return key.encode()

    class Files(Processor):
        def __init__(self) -> None:
            self.name, self.root, self.pattern = "imports", tmp_path / "in", "*.csv"

        async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
            if item.key == "broken.csv":
                raise ValueError("line 3: bad date")
            return Outcome({"rows": 2})

    (tmp_path / "in").mkdir()
    for name in ("a.csv", "broken.csv"):
        (tmp_path / "in" / name).write_text("x")
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'artifacts.db'}")
    keeper = Keeper(probe="always")
    view = keeper.view("report", build, sources=["t:a"], policy=Policy.strict(stale_if_error=600))
    states = keeper.remote("states", fetch, ttl=30, fallback=["open"])
    alerts = keeper.notifier("alerts", lambda notice: None)
    cache = ArtifactCache("packs", pack, index=engine, storage=str(tmp_path / "o"), keeper=keeper)
    pipeline = Pipeline(racy_window=0)
    pipeline.register(Files())
    keeper.health.watch_processor(pipeline, "imports", cadence=60, stuck_threshold=0)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await view.get()
        failing["view"] = True
        await keeper.bump("t:a")
        await view.get()  # error-stale
        await states.get()  # fallback, the fetch failed
        await alerts.observe("build-7", "failed")
        await cache.create_tables()
        await cache.get("main")
        with pytest.raises(Exception, match="disk full"):
            await cache.get("bad")
        await pipeline.run("imports")
        yield
        await engine.dispose()

    app = Starlette(lifespan=lifespan)
    Dashboard(keeper, token, health_every=0).mount(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"http://127.0.0.1:{port}/freshkeep?token={token}")
                expect.set_options(timeout=TIMEOUT_MS)
                report = page.locator('tr[data-view="report"]')
                expect(report.locator('[data-status="error-stale"]')).to_have_text("error-stale 1")
                expect(report.locator('td[data-field="last-error"]')).to_contain_text(
                    "summary query timed out"
                )
                expect(report.locator('td[data-field="last-error"]')).to_contain_text("failing for")
                remote = page.locator('tr[data-remote="states"]')
                expect(remote.locator('td[data-field="last-error"]')).to_contain_text(
                    "tracker unreachable"
                )
                expect(remote.locator('td[data-field="ttl"]')).to_have_text("30.0 s")
                notifier = page.locator('tr[data-notifier="alerts"]')
                expect(notifier.locator('td[data-field="sent"]')).to_have_text("1")
                packs = page.locator('tr[data-artifacts="packs"]')
                expect(packs.locator('td[data-field="stats"]')).to_contain_text("built 1")
                expect(packs.locator('td[data-field="last-error"]')).to_contain_text("disk full")
                imports = page.locator('tr[data-processor="imports"]')
                expect(imports.locator('td[data-field="stuck"]')).to_contain_text("broken.csv")
                expect(imports.locator('td[data-field="stuck"]')).to_contain_text("bad date")
                expect(imports.locator('td[data-field="last-run"]')).to_contain_text(
                    "processed 1 · failed 1"
                )
                expect(page.locator('tr[data-check="processor:imports:stuck"]')).to_contain_text(
                    "info"
                )
                expect(page.locator("#headline")).not_to_have_text("…")
                shot = ARTIFACTS / "dashboard-failures.png"
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(shot), full_page=True)
                print(f"dashboard screenshot (failures): {shot}")
                assert errors == []
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
