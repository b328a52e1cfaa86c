"""Service level under pytest-benchmark: one short load phase per mode (req/s in extra_info).

The full comparison, with the write phase and the freshness check, is ``freshkeep bench``.
"""

from __future__ import annotations

from typing import Any

import pytest

from freshkeep.bench import MODE_NAMES, ServiceConfig
from freshkeep.bench.service import run_service


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    config = ServiceConfig(seed_tasks=2_000, read_s=2.0, write_s=2.0, warmup_s=0.3)
    return run_service(config)


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_mode(benchmark: Any, service: dict[str, Any], mode: str) -> None:
    figures = service["modes"][mode]
    benchmark.extra_info.update(
        {
            "rps": figures["read"]["rps"],
            "p99_ms": figures["read"]["latency_ms"]["p99"],
            "rps_with_writes": figures["write"]["rps"],
            "freshness": figures["write"]["freshness"],
        }
    )
    # pytest-benchmark times a callable; the load ran in the fixture (another process).
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert figures["read"]["requests"] > 0
