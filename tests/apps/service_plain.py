"""A small FastAPI + SQLAlchemy service as its authors wrote it, before freshkeep: topics, their
tasks and progress events; a summary of all three, one per topic, and writes.

:mod:`tests.apps.service_adopted` is this file with freshkeep adopted:
``tests/unit/test_adoption.py`` counts the lines it adds, from a diff of the two files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Topic(Base):
    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="open")


class ProgressEvent(Base):
    __tablename__ = "progress_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    summary: Mapped[str] = mapped_column(String(200))


class TopicIn(BaseModel):
    name: str


class TaskIn(BaseModel):
    topic_id: int
    status: str = "open"


class ProgressIn(BaseModel):
    topic_id: int
    summary: str


def create_app(database_url: str) -> FastAPI:
    engine = create_async_engine(database_url)
    Session = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/state/summary")
    async def summary() -> dict[str, Any]:
        async with Session() as s:
            topics = await s.scalar(select(func.count()).select_from(Topic))
            tasks = await s.execute(select(Task.status, func.count()).group_by(Task.status))
            latest = select(ProgressEvent.summary).order_by(ProgressEvent.id.desc()).limit(5)
            progress = list(await s.scalars(latest))
        return {"topics": topics, "tasks": {status: n for status, n in tasks}, "progress": progress}

    @app.get("/topics/{topic_id}/summary")
    async def topic_summary(topic_id: int) -> dict[str, Any]:
        async with Session() as s:
            topic = await s.get(Topic, topic_id)
            if topic is None:
                raise HTTPException(404, f"topic {topic_id} does not exist")
            where = Task.topic_id == topic_id
            tasks = await s.execute(
                select(Task.status, func.count()).where(where).group_by(Task.status)
            )
        return {"topic": topic.name, "tasks": {status: n for status, n in tasks}}

    @app.post("/topics", status_code=201)
    async def add_topic(body: TopicIn) -> dict[str, int]:
        async with Session() as s:
            topic = Topic(name=body.name)
            s.add(topic)
            await s.commit()
            return {"id": topic.id}

    @app.post("/tasks", status_code=201)
    async def add_task(body: TaskIn) -> dict[str, int]:
        async with Session() as s:
            task = Task(topic_id=body.topic_id, status=body.status)
            s.add(task)
            await s.commit()
            return {"id": task.id}

    @app.post("/progress", status_code=201)
    async def add_progress(body: ProgressIn) -> dict[str, int]:
        async with Session() as s:
            event = ProgressEvent(topic_id=body.topic_id, summary=body.summary)
            s.add(event)
            await s.commit()
            return {"id": event.id}

    return app
