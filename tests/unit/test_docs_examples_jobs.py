"""The examples of docs/artifacts.md and docs/jobs.md, run as they are written (SQLite files and
a local artifact directory in a temporary working directory), with the names their text gives
them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.applications import Starlette

from freshkeep import Item, JobContext, Keeper, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.artifacts import ArtifactCache
from freshkeep.jobs import MemoryJobQueue, SQLJobQueue, job_queue_from_settings
from freshkeep.sql import create_engine
from tests.docs_blocks import python_block, run_block

DB = "sqlite+aiosqlite:///app.db"


class Base(DeclarativeBase):
    pass


class Topic(Base):
    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(primary_key=True)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))
    title: Mapped[str] = mapped_column(String(100))


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))


class Push(Base):
    __tablename__ = "pushes"
    id: Mapped[int] = mapped_column(primary_key=True)
    repo: Mapped[str] = mapped_column(String(100))
    tip: Mapped[str] = mapped_column(String(100))


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory whose ``app.db`` is also the job database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRESHKEEP_DATABASE_URL", DB)
    for name in ("FRESHKEEP_JOBS_URL", "FRESHKEEP_JOBS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


async def render_csv(key: str) -> bytes:
    return f"report of {key}\n".encode()


@pytest.fixture
async def exports(in_tmp: Path) -> AsyncIterator[dict[str, Any]]:
    """docs/artifacts.md's quick start, run: its names (``exports``, ``engine``, ``art``)."""
    keeper = Keeper()
    block = python_block("artifacts.md", "quick-start")
    found = await run_block(block, {"render_csv": render_csv, "keeper": keeper})
    async with found["engine"].begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    try:
        yield found | {"keeper": keeper}
    finally:
        await keeper.aclose()
        await found["engine"].dispose()


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")


# -- artifacts.md ------------------------------------------------------------------------------


async def test_an_artifact_is_built_once_and_served_by_its_url(
    in_tmp: Path, exports: dict[str, Any]
) -> None:
    cache: ArtifactCache = exports["exports"]
    art = exports["art"]
    assert (art.status, art.content_type, art.filename) == (
        "miss",
        "text/csv",
        "topic:42:rev:17.csv",
    )
    assert (in_tmp / "artifacts" / "exports" / art.id[:2] / art.id).exists()
    assert exports["keeper"].artifacts["exports"] is cache
    again = await cache.get("topic:42:rev:17")
    assert (again.status, again.id) == ("hit", art.id)

    async def build_report(key: str) -> bytes:
        return b"a report"

    reports = ArtifactCache("reports", build_report, index=exports["engine"], storage="artifacts")
    await reports.create_tables()
    app = Starlette()
    await run_block(
        python_block("artifacts.md", "routes"),
        {"app": app, "exports": cache, "reports": reports},
    )
    report = await reports.get("q1")
    async with client(app) as http:
        served = await http.get(art.url)
        tampered = await http.get(art.url.replace("expires=", "expires=1"))
        other = await http.get(report.url)
    assert served.status_code == 200 and served.content == b"report of topic:42:rev:17\n"
    assert served.headers["content-type"].startswith("text/csv")
    assert tampered.status_code == 403
    assert other.content == b"a report"


async def test_prebuild_jobs_enqueued_with_a_write_build_its_artifacts(
    exports: dict[str, Any],
) -> None:
    cache: ArtifactCache = exports["exports"]
    sessionmaker = async_sessionmaker(exports["engine"])
    async with sessionmaker() as s:
        s.add(Topic(id=42))
        await s.commit()
    session = sessionmaker()
    found = await run_block(
        python_block("artifacts.md", "jobs"), {"exports": cache, "session": session, "rev": 18}
    )
    queue = found["queue"]
    try:
        await queue.drain(10)
        assert (await cache.get("topic:42:rev:18")).status == "hit"  # the job built it

        async def bump_revisions(session: AsyncSession, topics: set[int]) -> dict[int, int]:
            done = await session.scalar(select(func.count()).select_from(Task))
            return dict.fromkeys(topics, done or 0)

        names = {"exports": cache, "queue": queue, "sessionmaker": sessionmaker}
        names |= {"Topic": Topic, "Task": Task, "Decision": Decision}
        names |= {"Session": Session, "AsyncSession": AsyncSession, "Sequence": Sequence}
        names |= {"bump_revisions": bump_revisions}
        found = await run_block(python_block("artifacts.md", "prebuild-on-commit"), names)
        await queue.drain(10)
        assert (await cache.get("42@1")).status == "hit"  # one job, built after the commit
        assert found["prebuild"].missed == 0
    finally:
        await session.close()
        await queue.aclose()


# -- jobs.md -----------------------------------------------------------------------------------


async def test_the_quick_start_runs_its_job_once(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = await run_block(python_block("jobs.md", "quick-start"), {})
    result = found["result"]
    assert result.enqueued and result.reason is None
    ran: list[str] = []
    queue = job_queue_from_settings()  # the same database: a job the block left is still there

    async def build_pack(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(f"job {ctx.job_id}, attempt {ctx.attempt}: building {args['tip']}")

    queue.task("build_pack", build_pack)
    try:
        await queue.drain(10)
    finally:
        await queue.aclose()
    printed = capsys.readouterr().out.splitlines()
    assert f"True {result.job_id} None" in printed
    runs = [line for line in printed + ran if line.startswith(f"job {result.job_id}, attempt 1")]
    assert runs == [f"job {result.job_id}, attempt 1: building abc123"]


async def test_a_job_enqueued_in_a_transaction_commits_with_it(in_tmp: Path) -> None:
    engine = create_engine("app.db")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    queue = SQLJobQueue(engine, create_tables=True)
    ran: list[dict[str, Any]] = []

    async def build_pack(ctx: JobContext, args: dict[str, Any]) -> None:
        ran.append(args)

    queue.task("build_pack", build_pack)
    names = {"session_factory": async_sessionmaker(engine), "Push": Push, "queue": queue}
    try:
        await queue.start()  # creates its table
        await run_block(python_block("jobs.md", "enqueue-in-transaction"), names)
        await queue.drain(10)
        async with engine.connect() as conn:
            assert (await conn.execute(select(Push.repo, Push.tip))).all() == [("main", "abc123")]
        assert ran == [{"repo": "main", "tip": "abc123"}]
    finally:
        await queue.aclose()
        await engine.dispose()


async def test_a_processor_scheduled_through_the_queue_runs(tmp_path: Path) -> None:
    (tmp_path / "one.jsonl").write_text("{}\n")
    (tmp_path / "two.jsonl").write_text("{}\n")

    class Sessions(Processor):
        name = "sessions"
        root = tmp_path
        pattern = "*.jsonl"

        async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
            return Outcome(counts={"bytes": item.size})

    pipeline = Pipeline()
    pipeline.register(Sessions())
    queue = MemoryJobQueue()
    try:
        found = await run_block(
            python_block("jobs.md", "schedule-processor"), {"queue": queue, "pipeline": pipeline}
        )
        assert found["task"] == "processor:sessions"
        await queue.drain(10)
    finally:
        await queue.aclose()
    states = await pipeline.state.load("sessions")
    assert {key: state.counts for key, state in states.items()} == {
        "one.jsonl": {"bytes": 3},
        "two.jsonl": {"bytes": 3},
    }


async def test_the_sql_job_queue_runs_jobs_from_its_own_engine(in_tmp: Path) -> None:
    engine = create_engine("other.db")
    found = await run_block(python_block("jobs.md", "sql-job-queue"), {"engine": engine})
    queue = found["queue"]
    done: list[dict[str, Any]] = []

    async def record(ctx: JobContext, args: dict[str, Any]) -> None:
        done.append(args)

    queue.task("record", record)
    try:
        await queue.create_tables()  # what `freshkeep migrate` does (migration 0004)
        await queue.enqueue("record", {"n": 1})
        await queue.drain(10)
    finally:
        await queue.aclose()
        await engine.dispose()
    assert done == [{"n": 1}]
    assert (in_tmp / "app.db").exists()  # from_url's own database
