"""The hub's ``core`` delta on PostgreSQL: after every step of random writes through the hub's
ORM code, the summary served equals a fresh build (the SQLite property runs through the API
too: ``tests/acceptance/test_hub_summary_delta.py``). The hub runs without its change-capture
triggers here: on PostgreSQL a triggered table's commits leave a gap, and rebuild."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from freshkeep.demo.hub import Hub
from tests.acceptance.conftest import HubClient
from tests.acceptance.test_hub_summary_delta import _check, _orm, orm_steps
from tests.conftest import POSTGRES_URL, need_service

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg_hub() -> AsyncIterator[HubClient]:
    need_service("PostgreSQL", POSTGRES_URL, 5432)
    name = f"fk_delta_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        POSTGRES_URL.replace("+asyncpg", "+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    hub = Hub.create(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}", seed_tasks=40, triggers=False)
    try:
        await hub.start()
        yield HubClient(app=None, hub=hub, http=None)  # type: ignore[arg-type]
    finally:
        if hub.started:
            await hub.stop()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(sequence=st.lists(orm_steps, min_size=1, max_size=10))
async def test_delta_equals_a_rebuild_on_postgres(
    pg_hub: HubClient, sequence: list[tuple[Any, ...]]
) -> None:
    await _check(pg_hub)
    for step in sequence:
        await _orm(pg_hub, step)
        await _check(pg_hub)
    assert pg_hub.hub.summary.stats.deltas.get("core", 0) > 0
