"""The hub's summary served the ways the benchmark compares (``freshkeep bench``).

:func:`install` adds plain Starlette routes (no FastAPI request handling, so every mode pays
the same framework cost) to an application made by :func:`freshkeep.demo.app.create_app`, and
one FastAPI route, the floor of the hub's own. They serve the same JSON as ``GET
/state/summary``:

================================ ===========================================================
``/bench/floor``                 pre-encoded bytes captured once: the floor, never fresh
``/bench/floor-fastapi``         the same bytes from a bare FastAPI route (no parameters):
                                 the floor of a FastAPI route such as ``/state/summary``
``/bench/floor-starlette``       the same bytes from a bare Starlette endpoint, matched first
                                 (before every other route)
``/bench/freshkeep``             the hub's ``summary`` view, through :func:`serve`
``/bench/ttl``                   a fixed 15 s TTL cache (in-process, single-flight rebuild)
``/bench/maxprobe``              the old approach: one ``MAX(updated_at)``-style query per
                                 table on every read; rebuild when a watermark moved
``/bench/uncached``              build the summary on every request
================================ ===========================================================

The routes are not part of ``freshkeep demo`` (nor of :mod:`freshkeep.demo`): only the
benchmark's server (:mod:`freshkeep.bench.server`) installs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from freshkeep.core.entry import encode, splice
from freshkeep.demo.app import get_hub
from freshkeep.demo.hub import Hub
from freshkeep.demo.models import (
    Comment,
    Decision,
    Export,
    Label,
    Member,
    Milestone,
    ProgressEvent,
    SessionFile,
    Task,
    Topic,
    Workstream,
    task_labels,
)
from freshkeep.demo.summary import SummaryBuilders
from freshkeep.integrations.starlette import serve
from freshkeep.views import BuildContext

TTL_SECONDS = 15.0
"""The fixed TTL of the ``ttl`` mode."""

WATERMARKS: tuple[Any, ...] = (
    func.max(Topic.created_at),
    func.max(Member.id),
    func.max(Workstream.created_at),
    func.max(Milestone.id),
    func.max(Task.updated_at),
    func.max(Label.id),
    func.max(task_labels.c.task_id),
    func.max(Decision.created_at),
    func.max(ProgressEvent.created_at),
    func.max(Comment.created_at),
    func.max(SessionFile.uploaded_at),
    func.max(Export.created_at),
)
"""The ``maxprobe`` mode's watermark of each of the summary's twelve tables: its newest
timestamp, or its largest id where it has none (members, milestones, labels, task labels)."""

_CTX = BuildContext("bench", "all", None, None, {})
_JSON = "application/json"
SUMMARY_PATH = "/state/summary"


async def build_summary(builders: SummaryBuilders) -> bytes:
    """The summary's JSON, built from the database now (what freshkeep caches)."""
    core = await builders.core(_CTX)
    progress = await builders.progress(_CTX)
    return splice([encode(core), encode(progress)])


class _TTLCache:
    def __init__(self, builders: SummaryBuilders, ttl: float) -> None:
        self.builders, self.ttl = builders, ttl
        self.body = b""
        self.expires = float("-inf")
        self.lock = asyncio.Lock()

    async def get(self) -> bytes:
        if time.monotonic() < self.expires:
            return self.body
        async with self.lock:
            if time.monotonic() >= self.expires:
                self.body = await build_summary(self.builders)
                self.expires = time.monotonic() + self.ttl
        return self.body


class _MaxProbeCache:
    def __init__(self, hub: Hub, builders: SummaryBuilders) -> None:
        self.hub, self.builders = hub, builders
        self.body = b""
        self.marks: tuple[Any, ...] | None = None
        self.lock = asyncio.Lock()

    async def probe(self) -> tuple[Any, ...]:
        async with self.hub.sessionmaker() as session:
            return tuple([await session.scalar(select(mark)) for mark in WATERMARKS])

    async def get(self) -> bytes:
        marks = await self.probe()
        if marks == self.marks:
            return self.body
        async with self.lock:
            if marks != self.marks:
                marks = await self.probe()  # read before the data, as a build does
                self.body = await build_summary(self.builders)
                self.marks = marks
        return self.body


Endpoint = Callable[[Request], Awaitable[Response]]


def _bytes_endpoint(get: Callable[[], Awaitable[bytes]]) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        return Response(await get(), media_type=_JSON)

    return endpoint


def _beside_summary(routes: list[Any]) -> int:
    """Where a route is matched right after ``/state/summary`` (before the routers the
    application includes, which have no path of their own)."""
    for i, route in enumerate(routes):
        path = getattr(route, "path", None)
        if path == SUMMARY_PATH:
            return i + 1
        if path is None:
            return i
    return len(routes)


def install(app: FastAPI) -> None:
    """Add the ``/bench/*`` routes to ``app`` (made by ``create_app``)."""
    hub = get_hub(app)
    builders = SummaryBuilders(hub.sessionmaker)
    ttl = _TTLCache(builders, TTL_SECONDS)
    maxprobe = _MaxProbeCache(hub, builders)
    floor: list[bytes] = []

    async def floor_body() -> bytes:
        if not floor:
            floor.append((await hub.summary.get()).body)
        return floor[0]

    async def floor_fastapi() -> Response:
        return Response(floor[0] if floor else await floor_body(), media_type=_JSON)

    async def freshkeep_endpoint(request: Request) -> Response:
        return await serve(request, hub.summary)

    async def uncached() -> bytes:
        return await build_summary(builders)

    router = app.router
    router.add_route("/bench/floor", _bytes_endpoint(floor_body), methods=["GET"])
    app.add_api_route(
        "/bench/floor-fastapi",
        floor_fastapi,
        methods=["GET"],
        response_class=Response,
        include_in_schema=False,
    )
    # Matched right after /state/summary (which is matched as in `freshkeep demo`), not after
    # every other route: the floor of that route pays about the same route matching as it.
    routes = router.routes
    routes.insert(_beside_summary(routes), routes.pop())
    # A bare Starlette endpoint, matched before any other route: the least a route can cost.
    router.add_route("/bench/floor-starlette", _bytes_endpoint(floor_body), methods=["GET"])
    routes.insert(0, routes.pop())
    router.add_route("/bench/freshkeep", freshkeep_endpoint, methods=["GET"])
    router.add_route("/bench/ttl", _bytes_endpoint(ttl.get), methods=["GET"])
    router.add_route("/bench/maxprobe", _bytes_endpoint(maxprobe.get), methods=["GET"])
    router.add_route("/bench/uncached", _bytes_endpoint(uncached), methods=["GET"])
