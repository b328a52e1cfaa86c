"""A typo'd source is an error, never a view that silently never invalidates (rule 8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from freshkeep import BuildContext, Keeper
from freshkeep.exceptions import UnknownSourceError
from freshkeep.integrations.sqlalchemy import track
from freshkeep.sql.revisions import SQLAlchemyRevisions
from freshkeep.testing import MemoryRevisions
from tests.integration.sa_support import TASKS, TRACKED, create_schema, sqlite_engine


async def build(ctx: BuildContext) -> dict[str, int]:
    return {"n": 1}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[object]:
    engine = sqlite_engine(tmp_path / "sources.db")
    await create_schema(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_typo_is_refused_at_start_with_a_suggestion(engine: object) -> None:
    keeper = Keeper(SQLAlchemyRevisions(engine))  # type: ignore[arg-type]
    keeper.view("ok", build, sources=[TASKS, "table:notes"])  # notes: a table, untracked
    keeper.view("typo", build, sources=["table:taks"])
    with pytest.raises(UnknownSourceError, match=r"'table:taks' \(did you mean 'table:tasks'\?\)"):
        await keeper.start()
    await keeper.aclose()


async def test_a_bare_table_name_is_refused_at_definition(engine: object) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    keeper = Keeper(SQLAlchemyRevisions(engine))  # type: ignore[arg-type]
    track(keeper, async_sessionmaker(engine), models=TRACKED)  # type: ignore[call-overload]
    with pytest.raises(UnknownSourceError, match=r"did you mean 'table:tasks'"):
        keeper.view("summary", build, sources=["tasks"])
    await keeper.aclose()


async def test_after_start_every_new_view_is_checked_at_definition(engine: object) -> None:
    keeper = Keeper(SQLAlchemyRevisions(engine), sources=["tag:prices"])  # type: ignore[arg-type]
    await keeper.start()
    keeper.view("tags", build, sources=["tag:prices", TASKS])
    with pytest.raises(UnknownSourceError, match="'tag:price'"):
        keeper.view("typo", build, sources=["tag:price"])
    keeper.declare("tag:price")
    keeper.view("declared", build, sources=["tag:price"])
    with pytest.raises(UnknownSourceError, match="'table:nope'"):
        keeper.view("missing", build, sources=["table:nope"])
    await keeper.aclose()


async def test_what_the_application_bumps_is_known(engine: object) -> None:
    keeper = Keeper(SQLAlchemyRevisions(engine))  # type: ignore[arg-type]
    await keeper.start()
    await keeper.bump("tag:fx")
    keeper.view("fx", build, sources=["tag:fx"])
    await keeper.aclose()


async def test_a_keeper_that_cannot_list_sources_checks_nothing() -> None:
    keeper = Keeper(MemoryRevisions())
    keeper.view("any", build, sources=["t:whatever"])
    await keeper.start()  # no catalog, no declarations: every source is the application's
    await keeper.aclose()


@pytest.mark.postgres
async def test_postgres_tables_of_other_schemas_are_known(pg_schema: object) -> None:
    from sqlalchemy import text

    from tests.conftest import PgSchema

    assert isinstance(pg_schema, PgSchema)
    other = f"{pg_schema.name}_x"
    engine = pg_schema.async_engine()
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{other}"'))
            await conn.execute(text(f'CREATE TABLE "{other}".events (id int)'))
            await conn.execute(text("CREATE TABLE local_table (id int)"))
        await SQLAlchemyRevisions(engine).create_table()
        keeper = Keeper(SQLAlchemyRevisions(engine))
        keeper.view("a", build, sources=[f"table:{other}.events", "table:local_table"])
        keeper.view("b", build, sources=[f"table:{pg_schema.name}.local_table"])
        await keeper.start()  # all known: no error
        with pytest.raises(UnknownSourceError, match="did you mean"):
            keeper.view("c", build, sources=[f"table:{other}.event"])
        await keeper.aclose()
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{other}" CASCADE'))
        await engine.dispose()
