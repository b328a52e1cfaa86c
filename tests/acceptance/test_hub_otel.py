"""The hub reports through OpenTelemetry when FRESHKEEP_OTEL asks for it."""

from __future__ import annotations

from pathlib import Path

import httpx

from freshkeep.core import tracing
from freshkeep.demo.app import hub_app
from freshkeep.demo.settings import HubSettings
from freshkeep.integrations.otel import OtelTracer


async def test_the_hub_is_instrumented_while_it_runs_when_the_setting_asks(
    tmp_path: Path,
) -> None:
    settings = HubSettings(otel=True)
    async with hub_app(str(tmp_path / "hub.db"), seed_tasks=0, settings=settings) as app:
        assert isinstance(tracing.tracer(), OtelTracer)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/state/summary")
            assert r.status_code == 200
    assert tracing.tracer() is tracing.NO_TRACER and tracing.on_read is None


async def test_the_hub_is_not_instrumented_by_default(tmp_path: Path) -> None:
    async with hub_app(str(tmp_path / "hub.db"), seed_tasks=0) as _app:
        assert tracing.tracer() is tracing.NO_TRACER
