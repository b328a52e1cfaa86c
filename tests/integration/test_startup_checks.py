"""A keeper fails fast at start, naming the command to run, when freshkeep's tables (or the
triggers it was told to expect) are missing; a database that is down is not an error yet."""

from __future__ import annotations

import asyncio
import re
import shlex
import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner

from freshkeep import ConfigurationError, Keeper, LocalBus, cli
from freshkeep.core.partitions import Partitioned
from freshkeep.sql import SQLAlchemyRevisions, migrate
from freshkeep.sql.triggers import (
    InstalledTriggers,
    install_triggers_async,
    installed_triggers_async,
)
from tests.conftest import PgSchema


async def test_missing_tables_and_triggers_fail_the_start_with_the_fix(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, n INTEGER)"))
    keeper = Keeper(SQLAlchemyRevisions(engine, triggers=["orders"]), bus=LocalBus())
    with pytest.raises(ConfigurationError, match=r"tables are missing .* `freshkeep migrate --db"):
        await keeper.start()
    await SQLAlchemyRevisions(engine).create_table()
    with pytest.raises(
        ConfigurationError, match=r"triggers are missing on orders.*--triggers orders"
    ):
        await keeper.start()
    await install_triggers_async(engine, ["orders"])
    await keeper.start()
    await keeper.aclose()
    await engine.dispose()


async def test_a_database_that_is_down_at_start_is_not_an_error_yet(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    keeper = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus())
    await keeper.start()  # logged: it may come up later
    await keeper.aclose()
    await engine.dispose()
    # aiosqlite stops the thread of a failed connection without waiting for it: let it end
    # while this test's event loop, which it reports to, is still open.
    for _ in range(200):
        if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)


# -- the partitions the triggers compute -----------------------------------------------------

BY_STATUS = Partitioned("table:tickets", "status", 16)
BY_OWNER = Partitioned("table:tickets", "owner", 16)
runner = CliRunner()


async def start(engine: AsyncEngine | Engine, *partitions: Partitioned) -> None:
    """Start (and close) a keeper with a view keyed by each of ``partitions``."""
    keeper = Keeper(SQLAlchemyRevisions(engine), bus=LocalBus())
    for i, by in enumerate(partitions):
        keeper.view(f"v{i}", lambda ctx: ctx.key, sources=[by])
    try:
        await keeper.start()
    finally:
        await keeper.aclose()


async def run_the_fix(message: str) -> None:
    """Run the command the message names, then check that the keeper starts."""
    command = shlex.split(re.findall(r"`(freshkeep migrate [^`]*)`", message)[-1])
    env = {"NO_COLOR": "1", "COLUMNS": "200"}
    result = await asyncio.to_thread(runner.invoke, cli.app, command[1:], env=env)
    assert result.exit_code == 0, result.output
    assert "triggers installed on: tickets (by owner, 16 buckets) (by status, 16 buckets)" in (
        result.output
    )


async def mismatches_fail_the_start_with_the_fix(engine: AsyncEngine | Engine, url: str) -> None:
    """Triggers told status; views keyed by owner, or by status in other buckets."""
    await start(engine, BY_OWNER)  # no triggers: the hooks' writes only, nothing to check
    await install_triggers_async(engine, ["tickets"], partitions=[BY_STATUS])
    await start(engine, BY_STATUS)  # what the triggers compute
    with pytest.raises(ConfigurationError) as err:
        await start(engine, BY_STATUS, BY_OWNER)
    message = str(err.value)
    assert "triggers of table 'tickets' compute the partitions of status (16 buckets)" in message
    assert "not owner: another program's writes" in message
    fix = (
        f"run `freshkeep migrate --db '{url}' --triggers tickets "
        "--partition tickets.owner:16 --partition tickets.status:16`"
    )
    assert fix in message
    other = Partitioned("table:tickets", "status", 32)
    with pytest.raises(ConfigurationError, match="status in 16 buckets, not 32"):
        await start(engine, other)
    await run_the_fix(message)
    await start(engine, BY_STATUS, BY_OWNER)
    await install_triggers_async(engine, ["tickets"])  # no partition: every write bumps /*
    await start(engine, BY_OWNER, other)


async def test_triggers_that_compute_other_partitions_fail_the_start_sqlite(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_async_engine(url.replace("sqlite:", "sqlite+aiosqlite:"))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("CREATE TABLE tickets (id INTEGER PRIMARY KEY, status INTEGER, owner INTEGER)")
            )
        await SQLAlchemyRevisions(engine).create_table()
        sync = create_engine(url)  # the command the message names runs on the sync URL
        await mismatches_fail_the_start_with_the_fix(sync, url)
        sync.dispose()
        # Triggers that do not name their partitions (an earlier freshkeep's) are refused.
        async with engine.begin() as conn:
            for op in ("insert", "update", "delete"):
                await conn.execute(text(f"DROP TRIGGER freshkeep_bump_tickets_{op}"))
                await conn.execute(
                    text(
                        f"CREATE TRIGGER freshkeep_bump_tickets_{op} AFTER {op.upper()} ON "
                        "tickets BEGIN INSERT INTO freshkeep_revisions VALUES ('table:tickets', "
                        "1) ON CONFLICT (source) DO UPDATE SET revision = revision + 1; END"
                    )
                )
        installed = await installed_triggers_async(engine)
        assert installed["tickets"].partitions is None
        await start(engine)  # no partition to check
        with pytest.raises(ConfigurationError, match="installed by an earlier freshkeep"):
            await start(engine, BY_OWNER)
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_triggers_that_compute_other_partitions_fail_the_start_postgres(
    pg_schema: PgSchema,
) -> None:
    url = f"{pg_schema.sync_url}?options={quote(f'-csearch_path={pg_schema.name}')}"
    engine = create_engine(url)  # the command the message names works on this URL
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE tickets (id int PRIMARY KEY, status text, owner int)"))
        await migrate.upgrade_async(engine)
        await mismatches_fail_the_start_with_the_fix(engine, url)
        await install_triggers_async(
            engine, ["tickets"], channel="fk_other", partitions=[BY_STATUS]
        )
        assert await installed_triggers_async(engine) == {
            "tickets": InstalledTriggers("tickets", (BY_STATUS,), "fk_other")
        }
        with pytest.raises(ConfigurationError, match="status:16 --channel fk_other`"):
            await start(engine, BY_OWNER)
    finally:
        engine.dispose()
