"""The hub's GC of one topic's exports on PostgreSQL (the embedded job runner in the hub's
database), raced by writes to the topic, their prebuild jobs and reads of its export."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep.demo import get_hub, hub_app
from freshkeep.demo.settings import HubSettings
from tests.integration.hub_export_gc import GRACE, TOKEN, TTL, race_topic_gc

pytestmark = pytest.mark.postgres


async def test_a_topics_gc_raced_by_its_writes_jobs_and_reads_loses_nothing(
    procrastinate_database: str, tmp_path: Path
) -> None:
    engine = create_async_engine(procrastinate_database)
    try:
        async with engine.begin() as conn:  # no export state from another test of the module
            for table in ("freshkeep_artifacts", "topic_export_revisions", "freshkeep_jobs"):
                await conn.execute(
                    text(
                        f"DO $$ BEGIN DELETE FROM {table}; "
                        "EXCEPTION WHEN undefined_table THEN NULL; END $$"
                    )
                )
    finally:
        await engine.dispose()
    settings = HubSettings(
        admin_token=SecretStr(TOKEN),
        processing_interval=0,
        jobs_backend="sql",
        jobs_poll_interval=0.05,
        artifact_storage_url=str(tmp_path / "artifacts"),
        artifact_ttl=TTL,
        artifact_orphan_grace=GRACE,
        artifact_max_stale_on_error=0.0,
    )
    async with hub_app(procrastinate_database, seed_tasks=100, settings=settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as http:
            await race_topic_gc(http, get_hub(app), topic=3, other=4)
