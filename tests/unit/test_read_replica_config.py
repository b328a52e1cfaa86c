"""A view on a read replica refuses what cannot work, at definition, naming the fix (no
server needed: engines connect lazily)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep import Keeper, Settings
from freshkeep.exceptions import ConfigurationError
from freshkeep.sql import ReadReplica, SQLAlchemyRevisions

PG = "postgresql+asyncpg://app:secret@127.0.0.1:1/app"


@pytest.fixture
async def engines() -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    primary, replica = create_async_engine(PG), create_async_engine(PG.replace("app", "ro", 1))
    yield primary, replica
    await primary.dispose()
    await replica.dispose()


async def build(ctx: object) -> int:
    return 1


async def test_an_engine_takes_the_keepers_primary_and_its_wait(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    primary, replica = engines
    settings = Settings(replica_wait=2.5, replica_timeout=0.5)
    keeper = Keeper(SQLAlchemyRevisions(primary), settings=settings)
    view = keeper.view("v", build, sources=["table:t"], replica=replica)
    assert view.replica is not None
    assert view.replica.primary is primary and view.replica.wait == 2.5
    assert view.replica.timeout == 0.5
    snap = view.snapshot().replica
    assert snap is not None and snap.wait == 2.5 and "secret" not in snap.replica
    assert (snap.on_replica, snap.on_primary, snap.waited, snap.behind) == (0, 0, 0, 0)
    assert keeper.view("plain", build, sources=["table:t"]).snapshot().replica is None


async def test_a_replica_needs_a_primary(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    keeper = Keeper()
    with pytest.raises(ConfigurationError, match="primary to fall back to"):
        keeper.view("v", build, sources=["table:t"], replica=engines[1])


async def test_a_replica_is_postgresql(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    lite = create_async_engine("sqlite+aiosqlite:///:memory:")
    try:
        with pytest.raises(ConfigurationError, match="PostgreSQL streaming replicas"):
            ReadReplica(lite, primary=engines[0])
        with pytest.raises(ConfigurationError, match="AsyncEngine"):
            ReadReplica("postgresql://x", primary=engines[0])  # type: ignore[arg-type]
    finally:
        await lite.dispose()


@pytest.mark.parametrize(
    ("wait", "poll", "max_poll", "timeout"),
    [(-1.0, 0.01, 0.2, 1.0), (1.0, 0.0, 0.2, 1.0), (1.0, 0.5, 0.2, 1.0), (1.0, 0.01, 0.2, 0.0)],
)
async def test_bounds_are_checked(
    engines: tuple[AsyncEngine, AsyncEngine],
    wait: float,
    poll: float,
    max_poll: float,
    timeout: float,
) -> None:
    with pytest.raises(ConfigurationError):
        ReadReplica(
            engines[1], primary=engines[0], wait=wait, poll=poll, max_poll=max_poll, timeout=timeout
        )


def test_the_wait_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHKEEP_REPLICA_WAIT", "0.25")
    monkeypatch.setenv("FRESHKEEP_REPLICA_TIMEOUT", "0.75")
    assert (Settings().replica_wait, Settings().replica_timeout) == (0.25, 0.75)
    with pytest.raises(ValueError):
        Settings(replica_wait=-1)


async def test_a_sync_primary_is_refused(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    from sqlalchemy import create_engine

    sync = create_engine(PG.replace("+asyncpg", "+psycopg2"))
    try:
        keeper = Keeper(SQLAlchemyRevisions(sync))
        with pytest.raises(ConfigurationError, match="primary must be a SQLAlchemy AsyncEngine"):
            keeper.view("v", build, sources=["table:t"], replica=engines[1])
        with pytest.raises(ConfigurationError, match="replica must be a SQLAlchemy AsyncEngine"):
            keeper.view("w", build, sources=["table:t"], replica="postgresql://replica/app")
    finally:
        sync.dispose()
