"""The hub's cached routes behind ``HitFastPath``: a hit never reaches FastAPI, anything else
does, and a write is seen by the very next read, also while many reads run at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import httpx
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from freshkeep.demo import hub_app


class Reached:
    """Inner middleware: the paths that got past the fast path."""

    paths: ClassVar[list[str]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Reached.paths.append(scope["path"])
        await self.app(scope, receive, send)


async def test_hits_skip_fastapi_and_a_write_is_seen_by_the_next_read(tmp_path: Path) -> None:
    async with hub_app(str(tmp_path / "hub.db"), seed_tasks=50) as app:
        app.user_middleware.insert(1, Middleware(Reached))  # right behind HitFastPath
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            for _ in range(2):
                await http.get("/state/summary")
                await http.get("/topics/1/summary")
            Reached.paths.clear()
            hits = [await http.get(p) for p in ("/state/summary", "/topics/1/summary")]
            assert Reached.paths == []
            assert [r.headers["x-freshkeep-cache"] for r in hits] == ["hit", "hit"]
            etag = hits[0].headers["etag"]
            r304 = await http.get("/state/summary", headers={"if-none-match": etag})
            assert r304.status_code == 304 and Reached.paths == ["/state/summary"]

            async def read() -> httpx.Response:
                return await http.get("/state/summary")

            for n in range(5):  # each write, with reads running around it
                readers = [asyncio.create_task(read()) for _ in range(20)]
                body = {"topic_id": 1, "event_type": "note", "summary": f"fast {n}", "author": "t"}
                written = await http.post("/progress", json=body)
                assert written.status_code == 201, written.text
                after = await read()
                assert f"fast {n}" in after.text  # read-your-writes through the fast path
                assert {r.status_code for r in await asyncio.gather(*readers)} == {200}
