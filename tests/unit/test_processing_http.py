"""The library's processor routes (list, run now: 200 / 404 / 409, admin bearer token) and the
one bearer-token check every admin endpoint shares."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from freshkeep.core.auth import bearer_ok
from freshkeep.processing import Item, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.processing.http import processor_routes
from freshkeep.scheduler import Scheduler

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Gate(Processor):
    """Counts the files it processes; waits on ``release`` when ``hold`` is set."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root, self.pattern = name, root, "*.txt"
        self.hold = False
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if self.hold:
            self.entered.set()
            await self.release.wait()
        return Outcome({"files": 1})


@pytest.mark.parametrize(
    ("header", "token", "ok"),
    [
        ("Bearer s3cret", "s3cret", True),
        ("bearer   s3cret  ", "s3cret", True),
        (b"Bearer s3cret", b"s3cret", True),
        ("Bearer nope", "s3cret", False),
        ("Basic s3cret", "s3cret", False),
        ("s3cret", "s3cret", False),
        (None, "s3cret", False),
        ("Bearer ", "", False),  # no configured token never matches
        ("Bearer x", None, False),
    ],
)
def test_bearer_ok(header: str | bytes | None, token: str | bytes | None, ok: bool) -> None:
    assert bearer_ok(header, token) is ok


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_run_list_404_409_and_auth(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    first, second = Pipeline(), Pipeline()
    gate = first.register(Gate("gate", tmp_path))
    second.register(Gate("other", tmp_path))
    scheduler = Scheduler()
    scheduler.add("other", lambda: second.run("other"), 60.0, delay=60.0)
    routes = processor_routes([first, second], admin_token=TOKEN, scheduler=scheduler)
    async with client(Starlette(routes=routes)) as http:
        assert (await http.post("/admin/processors/gate/run")).status_code == 401
        wrong = await http.post("/admin/processors/gate/run", headers={"Authorization": "x"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"

        ok = await http.post("/admin/processors/other/run", headers=AUTH)
        assert ok.status_code == 200 and ok.json()["processed"] == 1
        missing = await http.post("/admin/processors/nope/run", headers=AUTH)
        assert missing.status_code == 404
        assert "no processor named 'nope' (known: gate, other)" in missing.json()["detail"]

        assert isinstance(gate, Gate)
        gate.hold = True
        running = asyncio.create_task(http.post("/admin/processors/gate/run", headers=AUTH))
        await gate.entered.wait()
        busy = await http.post("/admin/processors/gate/run", headers=AUTH)
        assert busy.status_code == 409
        assert busy.json() == {"detail": "processor 'gate' is already running", "processor": "gate"}
        listing = (await http.get("/admin/processors", headers=AUTH)).json()
        assert listing["gate"]["running"] is True and listing["gate"]["schedule"] is None
        assert listing["other"]["last_run"]["processed"] == 1
        assert listing["other"]["schedule"]["every"] == 60.0
        gate.release.set()
        assert (await running).status_code == 200


async def test_without_a_token_the_routes_are_off(tmp_path: Path) -> None:
    routes = processor_routes(Pipeline(), admin_token=None, path="/p")
    async with client(Starlette(routes=routes)) as http:
        r = await http.post("/p/x/run", headers=AUTH)
        assert r.status_code == 403 and "FRESHKEEP_ADMIN_TOKEN" in r.json()["detail"]
        assert (await http.get("/p", headers=AUTH)).status_code == 403
