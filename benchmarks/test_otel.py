"""The cost of OpenTelemetry on a served hit, per batch of ``BATCH`` requests.

``serve()`` answers a hit from pre-encoded bytes; with :func:`freshkeep.integrations.otel.
instrument` installed it also sets the read status on the current span. Three rows: not
installed (one comparison), installed with no span recording, and installed inside a
recording request span (the SDK's, with no exporter: what setting two attributes costs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from benchmarks.conftest import BATCH
from freshkeep import BuildContext, Keeper
from freshkeep.integrations.starlette import serve
from freshkeep.testing import MemoryRevisions

otel = pytest.importorskip("freshkeep.integrations.otel")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")

Batch = Callable[[Callable[[], Awaitable[Any]]], Callable[[], None]]


@pytest.fixture(scope="module")
def served(loop: asyncio.AbstractEventLoop) -> Iterator[Callable[[], Awaitable[Any]]]:
    from starlette.requests import Request

    keeper = Keeper(MemoryRevisions())

    async def build(ctx: BuildContext) -> dict[str, int]:
        return {"open_tasks": 3}

    view = keeper.view("summary", build, sources=["t:a"])
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    request = Request(scope)
    loop.run_until_complete(view.get())

    async def hit() -> Any:
        response = await serve(request, view)
        assert response.status_code == 200
        return response

    yield hit
    loop.run_until_complete(keeper.aclose())


def _run(benchmark: Any, fn: Callable[[], None]) -> None:
    benchmark.extra_info["ops_per_round"] = BATCH
    benchmark.pedantic(fn, rounds=30, iterations=1, warmup_rounds=2)


def test_served_hit_without_otel(benchmark: Any, batch: Batch, served: Any) -> None:
    _run(benchmark, batch(served))


def test_served_hit_with_otel_no_span(benchmark: Any, batch: Batch, served: Any) -> None:
    provider = sdk_trace.TracerProvider()
    inst = otel.instrument(Keeper(MemoryRevisions()), tracer_provider=provider, metrics=False)
    try:
        _run(benchmark, batch(served))
    finally:
        inst.close()


def test_served_hit_with_otel_in_a_request_span(
    benchmark: Any, batch: Batch, served: Any, loop: asyncio.AbstractEventLoop
) -> None:
    provider = sdk_trace.TracerProvider()
    tracer = provider.get_tracer("bench")
    inst = otel.instrument(Keeper(MemoryRevisions()), tracer_provider=provider, metrics=False)

    async def many() -> None:
        with tracer.start_as_current_span("GET /"):
            for _ in range(BATCH):
                await served()

    try:
        _run(benchmark, lambda: loop.run_until_complete(many()))
    finally:
        inst.close()
