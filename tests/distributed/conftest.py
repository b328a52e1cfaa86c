"""Fixtures of the distributed tests: a database, a Redis namespace and hub processes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, need_service
from tests.distributed.cluster import Cluster, Database, Namespace, host_port, new_namespace


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "distributed: starts several hub processes on PostgreSQL and Redis"
    )
    config.addinivalue_line(
        "markers", "slow: runs for tens of seconds (deselect locally with -m 'not slow')"
    )


@pytest.fixture
def database() -> Iterator[Database]:
    """A fresh PostgreSQL database, dropped (WITH (FORCE)) after the test."""
    need_service("PostgreSQL", POSTGRES_URL, 5432)
    import psycopg2  # type: ignore[import-untyped]

    host, port = host_port(POSTGRES_URL, 5432)
    parts = POSTGRES_URL.split("://", 1)[1]
    user = parts.split("@", 1)[0].split(":", 1)[0] if "@" in parts else "postgres"
    admin_db = POSTGRES_URL.rsplit("/", 1)[1].split("?", 1)[0] or "postgres"
    name = f"fk_dist_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host=host, port=port, user=user, dbname=admin_db)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        try:
            yield Database(name, host, port, user)
        finally:
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
async def namespace() -> AsyncIterator[Namespace]:
    """A unique Redis key prefix and bus channel; the prefix's keys are deleted after."""
    need_service("Redis", REDIS_URL, 6379)
    import redis.asyncio as redis

    ns = new_namespace(REDIS_URL)
    try:
        yield ns
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=ns.prefix + "*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # uvicorn closes a connection idle for 5 s: never reuse one that old (a race, ReadError)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        yield client


@pytest.fixture
async def cluster(
    database: Database, namespace: Namespace, http: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """Starts hub processes (``await cluster.start(...)``); all are stopped after the test."""
    c = Cluster(database, namespace, tmp_path, http)
    try:
        yield c
    finally:
        c.stop()
