"""The shared store on each Redis topology under pytest-benchmark: a hit (``get`` of a stored
entry) and a compare-and-set ``put``, per batch of ``BATCH`` operations.

One server is the local Redis (``FRESHKEEP_TEST_REDIS_URL``); the cluster (three masters) and
the Sentinel set-up (a primary, a replica, three Sentinels) are started on free ports, as the
tests do (``tests/redis_servers.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REDIS_URL, need_service
from tests.integration.test_redis_store import make_entry
from tests.redis_servers import Servers, start_cluster, start_sentinels

from benchmarks.conftest import BATCH
from freshkeep.stores.redis import RedisStore

Batch = Callable[[Callable[[], Awaitable[Any]]], Callable[[], None]]


@pytest.fixture(scope="module")
def urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    need_service("Redis", REDIS_URL, 6379)
    servers = Servers(Path(tmp_path_factory.mktemp("redis-bench")))
    try:
        cluster = start_cluster(servers)
        sentinels = start_sentinels(servers)
        yield {"single": REDIS_URL, "cluster": cluster.url, "sentinel": sentinels.url}
    finally:
        servers.stop()


@pytest.fixture(params=["single", "cluster", "sentinel"])
def store(
    request: pytest.FixtureRequest, urls: dict[str, str], loop: asyncio.AbstractEventLoop
) -> Iterator[RedisStore]:
    s = RedisStore(urls[request.param], prefix=f"fk-bench:{uuid.uuid4().hex[:8]}:", ttl=60.0)
    yield s
    loop.run_until_complete(s.aclose())


def _run(benchmark: Any, fn: Callable[[], None]) -> None:
    benchmark.extra_info["ops_per_round"] = BATCH
    benchmark.pedantic(fn, rounds=10, iterations=1, warmup_rounds=1)


def test_store_hit(
    benchmark: Any, batch: Batch, store: RedisStore, loop: asyncio.AbstractEventLoop
) -> None:
    entry = make_entry({"table:a": 1})
    key = store.key_for(entry.view, entry.key)
    assert loop.run_until_complete(store.put(key, entry))

    async def hit() -> None:
        assert await store.get(key) is not None

    _run(benchmark, batch(hit))


def test_store_put(
    benchmark: Any, batch: Batch, store: RedisStore, loop: asyncio.AbstractEventLoop
) -> None:
    entry = make_entry({"table:a": 1})
    key = store.key_for(entry.view, entry.key)

    async def put() -> None:
        assert await store.put(key, entry)

    _run(benchmark, batch(put))
