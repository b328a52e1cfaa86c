"""Shared fixtures: real PostgreSQL and Redis from env URLs, isolated per test.

Servers are read from ``FRESHKEEP_TEST_POSTGRES_URL`` / ``FRESHKEEP_TEST_REDIS_URL`` (defaults:
the local servers). A test that needs a server that is not reachable is skipped, unless
``FRESHKEEP_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

pytest.register_assert_rewrite("freshkeep.testing.conformance")

POSTGRES_URL = os.environ.get(
    "FRESHKEEP_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("FRESHKEEP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("FRESHKEEP_REQUIRE_SERVICES") == "1"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, 1):
            return True
    except OSError:
        return False


def need_service(name: str, url: str, port: int) -> None:
    """Skip (or fail, when services are required) if ``url`` is not reachable."""
    if _reachable(url, port):
        return
    message = f"{name} is not reachable at {url}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and FRESHKEEP_REQUIRE_SERVICES=1")
    pytest.skip(message)


@dataclass(frozen=True)
class PgSchema:
    """A PostgreSQL schema of one test: URLs whose connections use it as ``search_path``."""

    name: str
    async_url: str
    sync_url: str

    def async_engine(self, **kw: object):  # type: ignore[no-untyped-def]
        from sqlalchemy.ext.asyncio import create_async_engine

        return create_async_engine(
            self.async_url, connect_args={"server_settings": {"search_path": self.name}}, **kw
        )

    def sync_engine(self, **kw: object):  # type: ignore[no-untyped-def]
        from sqlalchemy import create_engine

        return create_engine(
            self.sync_url, connect_args={"options": f"-csearch_path={self.name}"}, **kw
        )


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    """A fresh PostgreSQL schema, dropped after the test."""
    need_service("PostgreSQL", POSTGRES_URL, 5432)
    from sqlalchemy import create_engine, text

    name = f"fk_test_{uuid.uuid4().hex[:12]}"
    sync_url = POSTGRES_URL.replace("+asyncpg", "+psycopg2")
    admin = create_engine(sync_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield PgSchema(name, POSTGRES_URL, sync_url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
async def redis_client() -> AsyncIterator[object]:
    """A Redis client and a unique key prefix; keys under it are deleted after the test."""
    need_service("Redis", REDIS_URL, 6379)
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"fk-test:{uuid.uuid4().hex[:12]}:"
    client.freshkeep_prefix = prefix  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
