"""Fixtures of the pytest-benchmark entry points: a started hub on a loop of its own.

These files are not part of the default test run (``testpaths = ["tests"]``); run them with
``pytest benchmarks`` (``pip install 'freshkeep[bench]'``). ``FRESHKEEP_BENCH_SEED_TASKS``
sets the hub's size (default 10,000).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from freshkeep.demo import Hub, get_hub, hub_app

BATCH = 1_000
"""Operations per timed call: pytest-benchmark's figures are per batch (divide by this)."""


@pytest.fixture(scope="session")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def hub(loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    seed = int(os.environ.get("FRESHKEEP_BENCH_SEED_TASKS", "10000"))
    db: Path = tmp_path_factory.mktemp("bench") / "bench.db"
    cm = hub_app(str(db), seed_tasks=seed)
    app = loop.run_until_complete(cm.__aenter__())
    hub = get_hub(app)
    loop.run_until_complete(hub.summary.get())
    yield hub
    loop.run_until_complete(cm.__aexit__(None, None, None))


@pytest.fixture
def batch(
    loop: asyncio.AbstractEventLoop,
) -> Callable[[Callable[[], Awaitable[Any]]], Callable[[], None]]:
    """``batch(op)``: a function that runs ``await op()`` :data:`BATCH` times on the loop."""

    def make(op: Callable[[], Awaitable[Any]]) -> Callable[[], None]:
        async def many() -> None:
            for _ in range(BATCH):
                await op()

        return lambda: loop.run_until_complete(many())

    return make
