"""Both servers of the distributed mode are reachable (later features build on them)."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import PgSchema


async def test_postgres_reachable_in_own_schema(pg_schema: PgSchema) -> None:
    engine = pg_schema.async_engine()
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_schema()")) == pg_schema.name
    finally:
        await engine.dispose()


async def test_redis_reachable(redis_client) -> None:  # type: ignore[no-untyped-def]
    key = redis_client.freshkeep_prefix + "ping"
    await redis_client.set(key, b"1", ex=60)
    assert await redis_client.get(key) == b"1"
