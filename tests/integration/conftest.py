"""Fixtures shared by the integration tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_URL, need_service


@pytest.fixture(scope="module")
def procrastinate_database() -> Iterator[str]:
    """A fresh PostgreSQL database with procrastinate's schema, for the tests of one module
    (async SQLAlchemy URL); dropped afterwards."""
    from freshkeep.jobs import ProcrastinateJobQueue

    need_service("PostgreSQL", POSTGRES_URL, 5432)
    name = f"fk_jobs_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        POSTGRES_URL.replace("+asyncpg", "+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"

    async def apply() -> None:
        queue = ProcrastinateJobQueue(url)
        await queue.apply_schema()
        await queue.aclose()

    try:
        asyncio.run(apply())
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
