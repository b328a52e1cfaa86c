"""What docs/sizing.md says each engine carries, counted on a short run of
``python -m benchmarks.sizing``: per write one counter upsert in the writing transaction and
one ``PUBLISH``; per hit nothing; without reads, no build. Counts, not timings."""

from __future__ import annotations

import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, need_service


async def test_what_each_write_and_each_hit_cost() -> None:
    need_service("PostgreSQL", POSTGRES_URL, 5432)
    need_service("Redis", REDIS_URL, 6379)
    from benchmarks.sizing import report, run

    result = await run(writes=20, reads=200, seconds=1.0, instances=2)
    writes, hits, mixed = (result["phases"][p] for p in ("writes", "hits", "mixed"))
    n = writes["writes"]
    assert n == 20
    assert writes["pg_statements"]["freshkeep INSERT"] == n  # the counter upsert
    assert writes["pg_statements"]["app COMMIT"] == n  # no transaction of its own
    if result["redis"] == "private redis-server":
        assert writes["redis_commands"]["publish"] == n
        assert set(hits["redis_commands"]) <= {"ping"}
    else:  # a shared Redis: others' commands count too
        assert writes["redis_commands"]["publish"] >= n
    assert writes["reads"].get("builds", 0) == 0
    # Hits: no build, no Redis command but the bus's health pings (checked above), and no
    # query but the resync of each instance (at most one per resync_interval, plus one).
    assert hits["reads"]["hit"] == 200 and hits["reads"].get("builds", 0) == 0
    resyncs = hits["pg_statements"].get("freshkeep SELECT", 0)
    assert resyncs <= 2 * (hits["seconds"] / result["resync_interval"] + 1)
    assert set(hits["pg_statements"]) <= {"freshkeep SELECT", "app ROLLBACK"}
    # With writes, reads build: each build runs the builder's query once.
    assert mixed["reads"]["builds"] >= 1
    assert mixed["pg_statements"]["build SELECT"] == mixed["reads"]["builds"]
    assert "per 1,000 writes/s" in report(result)


@pytest.fixture(autouse=True)
def _quiet_store_timeouts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="freshkeep")
