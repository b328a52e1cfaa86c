"""The hub's tables: topics and their workstreams, tasks, decisions and progress, and the rest.

Every model is a plain SQLAlchemy 2 declarative class without relationships (the hub is async:
nothing is lazy-loaded). Timestamps are stored as naive UTC and read back as aware UTC
(:class:`UTCDateTime`), so SQLite and PostgreSQL return the same values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TaskStatus = Literal["todo", "progress", "blocked", "done"]
TASK_STATUSES: tuple[TaskStatus, ...] = ("todo", "progress", "blocked", "done")
DecisionStatus = Literal["open", "decided"]
DECISION_STATUSES: tuple[DecisionStatus, ...] = ("open", "decided")
ID_RANGE = range(-(2**31), 2**31)
"""The ids a row of the hub's tables can have: their ids are ``Integer`` columns, 32-bit on
PostgreSQL (which refuses a larger value as a query parameter)."""


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and returned as aware UTC, on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime cannot be stored as UTC: {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a raw SQLite value read through a Core expression
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base of the hub's tables."""


class Topic(Base):
    __tablename__ = "topics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(50), default="engineer")


class Workstream(Base):
    __tablename__ = "workstreams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Milestone(Base):
    __tablename__ = "milestones"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workstream_id: Mapped[int] = mapped_column(ForeignKey("workstreams.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="todo")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), default=None)
    milestone_id: Mapped[int | None] = mapped_column(ForeignKey("milestones.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Label(Base):
    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    color: Mapped[str] = mapped_column(String(7), default="#888888")


task_labels = Table(
    "task_labels",
    Base.metadata,
    Column("task_id", ForeignKey("tasks.id"), primary_key=True),
    Column("label_id", ForeignKey("labels.id"), primary_key=True, index=True),
)
"""Which labels each task carries (many-to-many)."""


class TaskLabel(Base):
    """A row of :data:`task_labels`, for writes through the ORM (whose changed rows the
    write hooks see whole)."""

    __table__ = task_labels

    task_id: Mapped[int]
    label_id: Mapped[int]


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="open")
    blocking: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class ProgressEvent(Base):
    __tablename__ = "progress_events"
    __table_args__ = (Index("ix_progress_events_created", "created_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), default=None, index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), default=None)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SessionFile(Base):
    __tablename__ = "session_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    filename: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    processed: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"), index=True)
    format: Mapped[str] = mapped_column(String(20), default="json")
    status: Mapped[str] = mapped_column(String(20), default="pending")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HubMeta(Base):
    """Facts about the hub's database itself (e.g. when it was seeded)."""

    __tablename__ = "hub_meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


TRACKED: tuple[Any, ...] = (
    Topic,
    Member,
    Workstream,
    Milestone,
    Task,
    Label,
    task_labels,
    Decision,
    ProgressEvent,
    Comment,
    SessionFile,
    Export,
)
"""Every table the summary reads: the write hooks bump their revisions."""

CORE_TABLES: tuple[Any, ...] = tuple(t for t in TRACKED if t is not ProgressEvent)
"""The sources of the summary's ``core`` section: everything but the progress tail."""

PROGRESS_TABLES: tuple[Any, ...] = (ProgressEvent, Task, Topic)
"""The sources of the ``progress`` section: each event shows its task's title and status."""
