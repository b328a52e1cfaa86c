"""The record of runs started by hand: who, which processor, when, the outcome and the counts;
kept for ``keep`` seconds; listed by the admin route."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from freshkeep.exceptions import ConfigurationError, ProcessorBusy, StoreError
from freshkeep.processing import (
    Item,
    MemoryRunHistory,
    Outcome,
    Pipeline,
    ProcessContext,
    Processor,
    RunBy,
    RunRecord,
)
from freshkeep.processing.http import processor_routes
from freshkeep.testing import FakeClock

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Files(Processor):
    """Fails on ``bad.txt``; waits on ``release`` when ``hold`` is set."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root, self.pattern = name, root, "*.txt"
        self.hold = False
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if self.hold:
            self.entered.set()
            await self.release.wait()
        if item.key == "bad.txt":
            raise ValueError("bad")
        return Outcome({"files": 1})


def pipeline_with(root: Path, *names: str, clock: FakeClock | None = None) -> Pipeline:
    clock = clock or FakeClock()
    pipeline = Pipeline(
        history=MemoryRunHistory(keep=3600, clock=clock), clock=clock, racy_window=0
    )
    for name in names:
        pipeline.register(Files(name, root))
    return pipeline


async def test_a_run_by_someone_is_recorded_with_its_counts(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    pipeline = pipeline_with(tmp_path, "files")
    history = pipeline.history
    assert isinstance(history, MemoryRunHistory)

    await pipeline.run("files")  # a scheduled run: not recorded
    assert history.records == []
    (tmp_path / "bad.txt").write_text("x")
    (tmp_path / "c.txt").write_text("c")
    stats = await pipeline.run("files", by=RunBy("admin", "http", "ann"))
    assert (stats.processed, stats.failed, stats.skipped) == (1, 1, 2)
    (record,) = await history.recent()
    assert (record.processor, record.pipeline, record.principal, record.operator) == (
        "files",
        "pipeline",
        "admin",
        "ann",
    )
    assert (record.via, record.outcome, record.who) == ("http", "items_failed", "ann")
    assert (record.scanned, record.processed, record.failed, record.skipped) == (4, 1, 1, 2)
    assert record.started_at == stats.started_at and record.id == 1
    assert record.as_dict()["who"] == "ann" and record.as_dict()["duration"] == 0.0

    (tmp_path / "bad.txt").unlink()
    await pipeline.run("files", by=RunBy("alice@host", "cli"))
    newest = (await history.recent())[0]
    assert (newest.outcome, newest.who, newest.via) == ("ok", "alice@host", "cli")


async def test_busy_and_failed_runs_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    pipeline = pipeline_with(tmp_path, "files")
    files = pipeline.get("files")
    assert isinstance(files, Files)
    files.hold = True
    running = asyncio.create_task(pipeline.run("files", by=RunBy("first", "cli")))
    await files.entered.wait()
    with pytest.raises(ProcessorBusy):
        await pipeline.run("files", by=RunBy("second", "cli"))
    files.release.set()
    await running
    assert pipeline.history is not None
    records = await pipeline.history.recent()
    assert [(r.principal, r.outcome, r.processed) for r in records] == [
        ("first", "ok", 1),  # the same fake time: the last recorded first
        ("second", "busy", 0),
    ]

    class Broken(Files):
        def items(self):  # type: ignore[no-untyped-def]
            raise OSError("disk gone")

    pipeline.register(Broken("broken", tmp_path))
    with pytest.raises(OSError):
        await pipeline.run("broken", by=RunBy("admin"))
    (failed,) = await pipeline.history.recent("broken")
    assert (failed.outcome, failed.error, failed.via) == ("error", "OSError: disk gone", "api")


async def test_records_older_than_keep_are_dropped_on_write(tmp_path: Path) -> None:
    clock = FakeClock()
    pipeline = pipeline_with(tmp_path, "files", "other", clock=clock)
    await pipeline.run("files", by=RunBy("a"))
    clock.advance(3000)
    await pipeline.run("other", by=RunBy("b"))
    clock.advance(1000)  # the first is 4000 s old now, the second 1000 s
    await pipeline.run("files", by=RunBy("c"))
    assert pipeline.history is not None
    assert [r.principal for r in await pipeline.history.recent()] == ["c", "b"]
    assert [r.principal for r in await pipeline.history.recent("files")] == ["c"]
    assert [r.principal for r in await pipeline.history.recent(limit=1)] == ["c"]
    clock.advance(3000)
    assert await pipeline.history.prune() == 1
    assert [r.principal for r in await pipeline.history.recent()] == ["c"]


async def test_a_failing_history_never_fails_the_run(tmp_path: Path) -> None:
    class Down(MemoryRunHistory):
        async def record(self, record: RunRecord) -> RunRecord:
            raise StoreError("history down")

    (tmp_path / "a.txt").write_text("a")
    pipeline = Pipeline(history=Down(), racy_window=0)
    pipeline.register(Files("files", tmp_path))
    assert (await pipeline.run("files", by=RunBy("admin"))).processed == 1


@pytest.mark.parametrize(
    ("principal", "operator"), [("", None), ("x" * 256, None), ("admin", "a\nb"), ("a", " ")]
)
def test_names_are_checked(principal: str, operator: str | None) -> None:
    with pytest.raises(ConfigurationError):
        RunBy(principal, "http", operator)


def test_keep_is_checked() -> None:
    for keep in (0, -1, float("inf"), True):
        with pytest.raises(ConfigurationError):
            MemoryRunHistory(keep=keep)


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_the_admin_route_records_and_lists_runs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    first = pipeline_with(tmp_path, "gate")
    second = Pipeline(history=first.history, clock=first.clock)  # one history: listed once
    second.register(Files("other", tmp_path))
    routes = processor_routes([first, second], admin_token=TOKEN, principal="ops-token")
    async with client(Starlette(routes=routes)) as http:
        assert (await http.get("/admin/processors/history")).status_code == 401
        r = await http.post(
            "/admin/processors/gate/run", headers=AUTH | {"X-Freshkeep-Operator": " ann "}
        )
        assert r.status_code == 200
        assert (await http.post("/admin/processors/other/run", headers=AUTH)).status_code == 200
        bad = await http.post(
            "/admin/processors/gate/run", headers=AUTH | {"X-Freshkeep-Operator": "x" * 300}
        )
        assert bad.status_code == 400 and "X-Freshkeep-Operator" in bad.json()["detail"]
        assert (await http.post("/admin/processors/nope/run", headers=AUTH)).status_code == 404

        gate = first.get("gate")
        assert isinstance(gate, Files)
        (tmp_path / "b.txt").write_text("b")  # something to process (and hold on)
        gate.hold = True
        running = asyncio.create_task(http.post("/admin/processors/gate/run", headers=AUTH))
        await gate.entered.wait()
        assert (await http.post("/admin/processors/gate/run", headers=AUTH)).status_code == 409
        gate.release.set()
        assert (await running).status_code == 200

        body = (await http.get("/admin/processors/history", headers=AUTH)).json()
        assert r.headers["cache-control"] == "no-store"
        rows = [(x["processor"], x["who"], x["principal"], x["outcome"]) for x in body["runs"]]
        assert rows == [
            ("gate", "ops-token", "ops-token", "ok"),
            ("gate", "ops-token", "ops-token", "busy"),
            ("other", "ops-token", "ops-token", "ok"),
            ("gate", "ann", "ops-token", "ok"),
        ]
        assert body["runs"][-1]["processed"] == 1 and body["runs"][-1]["via"] == "http"
        only = await http.get("/admin/processors/history?processor=other", headers=AUTH)
        assert [x["processor"] for x in only.json()["runs"]] == ["other"]
        one = await http.get("/admin/processors/history?limit=1", headers=AUTH)
        assert len(one.json()["runs"]) == 1
        for limit in ("0", "x", "1001"):
            r = await http.get(f"/admin/processors/history?limit={limit}", headers=AUTH)
            assert r.status_code == 400


async def test_the_history_route_without_a_history_or_a_token(tmp_path: Path) -> None:
    routes = processor_routes(Pipeline(), admin_token=TOKEN)
    async with client(Starlette(routes=routes)) as http:
        r = await http.get("/admin/processors/history", headers=AUTH)
        assert r.status_code == 404 and "history=" in r.json()["detail"]
    routes = processor_routes(pipeline_with(tmp_path), admin_token=None)
    async with client(Starlette(routes=routes)) as http:
        assert (await http.get("/admin/processors/history", headers=AUTH)).status_code == 403
    with pytest.raises(ConfigurationError):
        processor_routes(Pipeline(), admin_token=TOKEN, principal="")
