"""The hub's request and response bodies (pydantic): validation errors answer ``422``.

Request bodies are strict: an integer must be a JSON integer, a boolean ``true`` or ``false``
(not ``0``, ``"yes"``), a string a string, and unknown fields are refused. Ids are bounded by
the tables' 32-bit ids (``1`` to ``2**31 - 1``): any other is ``422``, naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from freshkeep.demo.models import ID_RANGE, DecisionStatus, TaskStatus

SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""White space (Unicode's White_Space): stripped from both ends of a name, title or text."""
NOT_BLANK = f"[^{SPACE}]"
"""A JSON-schema pattern (a search, in any regex dialect): a character that is not white space."""


def _strip(value: str) -> str:
    return value.strip(SPACE)


def _not_blank(value: str) -> str:
    stripped = value.strip(SPACE)
    if not stripped:
        raise ValueError("must not be empty or white space only")
    return stripped


_NOT_BLANK = Field(json_schema_extra={"pattern": NOT_BLANK, "minLength": 1})

# The length limits apply to the text as sent (as the schema says); what is stored has no white
# space at either end.
Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(_not_blank), _NOT_BLANK]
Title = Annotated[str, StringConstraints(max_length=300), AfterValidator(_not_blank), _NOT_BLANK]
Text = Annotated[str, StringConstraints(max_length=5000), AfterValidator(_strip)]
Summary = Annotated[str, StringConstraints(max_length=5000), AfterValidator(_not_blank), _NOT_BLANK]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,39}$")]
MAX_ID = ID_RANGE.stop - 1
"""The largest id a row of the hub's tables can have (``2**31 - 1``)."""


def _integral(value: Any) -> Any:
    """A JSON number without a fraction (``3.0``) is the integer it names, as in JSON Schema;
    anything else is left to the strict check (``true``, ``"3"``, ``3.5`` are refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Id = Annotated[int, Field(ge=1, le=MAX_ID), BeforeValidator(_integral)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


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


def _schema_of(tp: Any) -> WithJsonSchema:
    """``tp``'s JSON schema: that of a field that may be left out but is never ``null``."""
    return WithJsonSchema(TypeAdapter(tp).json_schema())


class TaskPatch(_In):
    """What to change: at least one field; a field given is not ``null``."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    status: Annotated[TaskStatus | None, _schema_of(TaskStatus)] = None
    title: Annotated[Title | None, _schema_of(Title)] = None
    workstream_id: Annotated[Id | None, _schema_of(Id)] = Field(
        None, description="move the task to this workstream (possibly of another topic)"
    )

    @field_validator("status", "title", "workstream_id", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null: leave the field out to keep it")
        return value

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


class ErrorDetail(BaseModel):
    """The body of a ``404``, a ``409`` or a ``400`` of the hub's own: what was wrong."""

    detail: str


class ValidationErrorItem(BaseModel):
    """One problem of a ``422``: where (``["body", "title"]``, ``["path", "task_id"]``), what
    (``msg``, ``type``) and the value refused (``input``)."""

    loc: list[str | int]
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorBody(BaseModel):
    """The body of a ``422``: every problem found in the request."""

    detail: list[ValidationErrorItem]


class ErrorBody(BaseModel):
    """The body of a ``413``, a ``500``, a ``503`` or a malformed header's ``400``: a token
    (``too-large``, ``internal``, ``unavailable``, ``bad-request``), what happened, and the id
    under which the error was logged when there is one."""

    model_config = ConfigDict(extra="allow")

    error: str
    detail: str | None = None
    error_id: str | None = None


Responses = dict[int | str, dict[str, Any]]


def responses(**described: str) -> Responses:
    """OpenAPI ``responses`` for the hub's error statuses: ``responses(e404="a task does not
    exist")``, with the body model of each status."""
    models: dict[int, Any] = {
        400: ErrorDetail | ErrorBody,
        401: ErrorDetail,
        403: ErrorDetail,
        404: ErrorDetail,
        409: ErrorDetail,
        413: ErrorBody,
        422: ValidationErrorBody,
        503: ErrorBody,
    }
    out: Responses = {}
    for name, description in described.items():
        status = int(name.removeprefix("e"))
        out[status] = {"model": models[status], "description": description}
    return out
