"""A keeper fails fast at start, naming the command to run, when freshkeep's tables (or the
triggers it was told to expect) are missing; a database that is down is not an error yet."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep import ConfigurationError, Keeper, LocalBus
from freshkeep.sql import SQLAlchemyRevisions
from freshkeep.sql.triggers import install_triggers_async


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
