"""The hub's request and response bodies (pydantic): validation errors answer ``422``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from freshkeep.demo.models import DecisionStatus, TaskStatus

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)]
Summary = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000)]
EventType = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z][a-z0-9_.-]{0,39}$")
]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TopicIn(_In):
    name: Name
    description: Text = ""


class TopicOut(_Out):
    id: int
    name: str
    description: str
    created_at: datetime


class WorkstreamIn(_In):
    topic_id: Id
    name: Name
    owner_id: Id | None = None


class WorkstreamOut(_Out):
    id: int
    topic_id: int
    name: str
    owner_id: int | None
    created_at: datetime


class TaskIn(_In):
    workstream_id: Id
    title: Title
    status: TaskStatus = "todo"
    assignee_id: Id | None = None


class TaskPatch(_In):
    status: TaskStatus | None = None
    title: Title | None = None
    workstream_id: Id | None = Field(
        None, description="move the task to this workstream (possibly of another topic)"
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.status is None and self.title is None and self.workstream_id is None:
            raise ValueError("give a new status or title, or a workstream_id")
        return self


class TaskOut(_Out):
    id: int
    workstream_id: int
    topic_id: int = Field(description="the topic of the task's workstream")
    title: str
    status: TaskStatus
    assignee_id: int | None
    milestone_id: int | None
    created_at: datetime
    updated_at: datetime


class DecisionIn(_In):
    topic_id: Id
    title: Title
    status: DecisionStatus = "open"
    blocking: bool = False


class DecisionOut(_Out):
    id: int
    topic_id: int
    title: str
    status: DecisionStatus
    blocking: bool
    created_at: datetime
    decided_at: datetime | None


class ProgressIn(_In):
    topic_id: Id
    task_id: Id | None = None
    event_type: EventType = Field(description="e.g. note, status_change, review, release")
    summary: Summary
    author: Name


class ProgressOut(_Out):
    id: int
    topic_id: int
    task_id: int | None
    event_type: str
    summary: str
    author: str
    created_at: datetime
