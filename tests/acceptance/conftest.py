"""The reference hub started in-process on a SQLite file of its own, and an HTTP client to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from freshkeep.demo import Hub, get_hub, hub_app


@dataclass
class HubClient:
    """A started hub and a client that talks to it through ASGI."""

    app: FastAPI
    hub: Hub
    http: httpx.AsyncClient

    def builds(self) -> dict[str, int]:
        """How many times each section of the summary was built."""
        return dict(self.hub.summary.stats.builds)

    async def summary(self, **kw: Any) -> httpx.Response:
        r = await self.http.get("/state/summary", **kw)
        assert r.status_code in (200, 304), r.text
        return r

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = await self.http.post(path, json=body)
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data


@asynccontextmanager
async def running_hub(db: Path, *, seed_tasks: int) -> AsyncIterator[HubClient]:
    """Start a hub on ``db`` (lifespan included) and yield a client to it."""
    async with hub_app(str(db), seed_tasks=seed_tasks) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            yield HubClient(app, get_hub(app), http)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubClient]:
    """A hub seeded with 200 tasks."""
    async with running_hub(tmp_path / "hub.db", seed_tasks=200) as client:
        yield client


@pytest.fixture
async def empty_hub(tmp_path: Path) -> AsyncIterator[HubClient]:
    """A hub on an empty database."""
    async with running_hub(tmp_path / "empty.db", seed_tasks=0) as client:
        yield client
