"""Library level under pytest-benchmark: one hit, per batch of ``BATCH`` operations.

The side-by-side run with ratios is ``freshkeep bench --level library``; these entry points
let pytest-benchmark compare runs over time (``--benchmark-autosave``,
``--benchmark-compare``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from benchmarks.conftest import BATCH
from freshkeep.demo import Hub

Batch = Callable[[Callable[[], Awaitable[Any]]], Callable[[], None]]


def _run(benchmark: Any, fn: Callable[[], None]) -> None:
    benchmark.extra_info["ops_per_round"] = BATCH
    benchmark.pedantic(fn, rounds=30, iterations=1, warmup_rounds=2)


def test_await_value(benchmark: Any, batch: Batch) -> None:
    value = {"summary": b"{}"}

    async def coro() -> dict[str, bytes]:
        return value

    _run(benchmark, batch(coro))


def test_freshkeep_hit(benchmark: Any, batch: Batch, hub: Hub) -> None:
    _run(benchmark, batch(hub.summary.get))
    assert hub.summary.peek() is not None


def test_freshkeep_read(benchmark: Any, batch: Batch, hub: Hub) -> None:
    _run(benchmark, batch(hub.summary.read))
    assert hub.summary.peek() is not None


def test_dogpile_memory(benchmark: Any, hub: Hub) -> None:
    dogpile = pytest.importorskip("dogpile.cache")
    region = dogpile.make_region().configure("dogpile.cache.memory", expiration_time=3600)
    body = hub.summary.peek().body  # type: ignore[union-attr]
    region.set("k", body)

    def many() -> None:
        for _ in range(BATCH):
            region.get("k")

    _run(benchmark, many)


def test_aiocache_memory(benchmark: Any, batch: Batch, hub: Hub, loop: Any) -> None:
    aiocache = pytest.importorskip("aiocache")
    cache = aiocache.Cache(aiocache.Cache.MEMORY)
    loop.run_until_complete(cache.set("k", hub.summary.peek().body))  # type: ignore[union-attr]
    _run(benchmark, batch(lambda: cache.get("k")))


@pytest.mark.parametrize("check_repr", [True, False], ids=["defaults", "no-repr"])
def test_cashews_memory(
    benchmark: Any, batch: Batch, hub: Hub, loop: Any, check_repr: bool
) -> None:
    cashews = pytest.importorskip("cashews")
    cache = cashews.Cache()
    cache.setup("mem://", check_repr=check_repr)
    loop.run_until_complete(cache.set("k", hub.summary.peek().body))  # type: ignore[union-attr]
    _run(benchmark, batch(lambda: cache.get("k")))


def test_revision_probe_unchanged(benchmark: Any, batch: Batch, hub: Hub) -> None:
    """A read of the summary's revisions when nothing committed: the SQLite data version only
    (the counter SELECT, ~1 ms here, is ``freshkeep bench --level library``'s ``probe_query``)."""
    from freshkeep.sql.revisions import SQLAlchemyRevisions

    revisions = SQLAlchemyRevisions(hub.engine)
    sources = hub.summary.sources
    try:
        _run(benchmark, batch(lambda: revisions.read(sources)))
        assert revisions.skipped > 0
    finally:
        revisions.close()
