"""The library's write-path helpers for Starlette/FastAPI and SQLAlchemy:
``PrebuildOnCommit`` (one deduplicated prebuild job per commit, nothing for a rollback) and
``causal_token`` (a write's response carries the revisions it committed)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from freshkeep.artifacts import ArtifactCache
from freshkeep.core.entry import parse_revision
from freshkeep.integrations.prebuild import PrebuildOnCommit, prebuild_on_commit
from freshkeep.integrations.starlette import causal_token
from freshkeep.jobs import SQLJobQueue, jobs_table

from .sa_support import Project, Task, TrackedDb, sqlite_db


def projects_of(session: Session, rows: Sequence[Any]) -> set[str]:
    """A task's project, and the project it left when it moved."""
    out: set[str] = set()
    for row in rows:
        if isinstance(row, Task):
            moved = inspect(row).attrs["project_id"].history.deleted or ()
            out.update(f"project-{p}" for p in (row.project_id, *moved) if p is not None)
    return out


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[TrackedDb]:
    async with sqlite_db(tmp_path / "app.db") as db:
        async with db.maker() as s:
            s.add_all([Project(id=1, name="a"), Project(id=2, name="b")])
            await s.commit()
        yield db


@pytest.fixture
async def parts(db: TrackedDb, tmp_path: Path) -> AsyncIterator[tuple[ArtifactCache, SQLJobQueue]]:
    async def build(key: str) -> bytes:
        return key.encode()

    cache = ArtifactCache("exports", build, index=db.engine, storage=str(tmp_path / "objects"))
    queue = SQLJobQueue(db.engine, create_tables=True)
    await queue.create_tables()
    cache.register_jobs(queue)
    yield cache, queue
    await queue.aclose()


async def prebuild_jobs(db: TrackedDb, cache: ArtifactCache, queue: SQLJobQueue) -> list[Any]:
    async with db.engine.connect() as conn:
        ids = (
            await conn.scalars(
                select(jobs_table.c.id)
                .where(jobs_table.c.task == cache.prebuild_task)
                .order_by(jobs_table.c.id)
            )
        ).all()
    out = []
    for job_id in ids:
        info = await queue.get_job(str(job_id))
        assert info is not None
        out.append(info.args["keys"])
    return out


async def test_one_job_per_commit_with_every_key_and_none_for_a_rollback(
    db: TrackedDb, parts: tuple[ArtifactCache, SQLJobQueue]
) -> None:
    cache, queue = parts
    prebuild = prebuild_on_commit(db.maker, cache, queue, touched=projects_of, models=(Task,))
    async with db.maker() as s:
        s.add_all([Task(id=1, title="x", project_id=1), Task(id=2, title="y", project_id=2)])
        await s.flush()
        s.add(Task(id=3, title="z", project_id=1))  # a second flush, the same transaction
        assert prebuild.touched(s) == {"project-1", "project-2"}
        result = await prebuild.commit(s)
    assert result is not None and result.enqueued
    assert await prebuild_jobs(db, cache, queue) == [["project-1", "project-2"]]

    async with db.maker() as s:  # moved: both projects; the same keys as the waiting job
        task = await s.get(Task, 1)
        assert task is not None
        task.project_id = 2
        assert prebuild.touched(s) == set()
        await s.flush()
        assert prebuild.touched(s) == {"project-1", "project-2"}
        again = await prebuild.commit(s)
    assert again is not None and not again.enqueued  # deduplicated

    async with db.maker() as s:  # rolled back: its job goes with it
        s.add(Task(id=9, title="never", project_id=2))
        assert (await prebuild.before_commit(s)) is not None
        await s.rollback()
    async with db.maker() as s:  # a project row is not one of the models: nothing
        s.add(Project(id=3, name="c"))
        assert await prebuild.commit(s) is None
    assert len(await prebuild_jobs(db, cache, queue)) == 1

    prebuild.remove()
    async with db.maker() as s:
        s.add(Task(id=4, title="w", project_id=1))
        assert prebuild.touched(s) == set()
        await s.commit()
    assert len(await prebuild_jobs(db, cache, queue)) == 1


async def test_keys_run_in_the_transaction_and_the_same_change_is_one_job(
    db: TrackedDb, parts: tuple[ArtifactCache, SQLJobQueue], caplog: pytest.LogCaptureFixture
) -> None:
    cache, queue = parts
    seen: list[set[str]] = []

    async def keys(session: AsyncSession, touched: set[str]) -> list[str]:
        assert session.in_transaction()
        seen.append(touched)
        return [f"{p}@1" for p in sorted(touched)]

    prebuild = PrebuildOnCommit(cache, queue, touched=projects_of, keys=keys)
    other: async_sessionmaker[AsyncSession] = async_sessionmaker(db.engine)
    prebuild.install(db.maker)
    for ident in (1, 2):
        async with db.maker() as s:
            s.add(Task(id=ident, title="t", project_id=1))
            await prebuild.commit(s)
    assert seen == [{"project-1"}, {"project-1"}]
    assert await prebuild_jobs(db, cache, queue) == [["project-1@1"]]  # deduplicated

    async with other() as s:  # sessions of another factory are not watched
        s.add(Task(id=5, title="t", project_id=2))
        await s.commit()
    with caplog.at_level(logging.WARNING, logger="freshkeep.artifacts"):
        async with db.maker() as s:  # committed without the helper: said, not silent
            s.add(Task(id=6, title="t", project_id=2))
            await s.commit()
        async with db.maker() as s:  # counted, logged once
            s.add(Task(id=8, title="t", project_id=2))
            await s.commit()
    assert caplog.text.count("no prebuild job was enqueued") == 1
    assert prebuild.missed == 2
    assert len(seen) == 2
    prebuild.remove()


async def test_causal_token_sets_the_revision_header_of_a_write(db: TrackedDb) -> None:
    async def write(request: Request) -> Response:
        response = JSONResponse({"ok": True})
        async with db.maker() as s:
            causal_token(response, s, db.keeper)
            if request.query_params.get("write") == "1":
                s.add(Task(id=7, title="t", project_id=1))
            await s.commit()
        return response

    app = Starlette(routes=[Route("/write", write, methods=["POST"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        wrote = await http.post("/write?write=1")
        token = parse_revision(wrote.headers["x-freshkeep-revision"])
        assert token["table:tasks"] == (await db.revisions.read(["table:tasks"]))["table:tasks"]
        nothing = await http.post("/write")
        assert "x-freshkeep-revision" not in nothing.headers
