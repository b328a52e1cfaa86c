"""The hub's HTTP endpoints: a small REST API for writes, and the cached summary.

Every write goes through an ORM session of the hub's (tracked) session factory, so its commit
bumps the revisions of the tables it touched and the next read of ``/state/summary`` rebuilds
exactly the sections that depend on them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from freshkeep.core.auth import bearer_ok
from freshkeep.demo.errors import StrictJSONRoute
from freshkeep.demo.exports import TopicExports
from freshkeep.demo.hub import Hub
from freshkeep.demo.models import (
    ID_RANGE,
    Base,
    Comment,
    Decision,
    Member,
    ProgressEvent,
    Task,
    TaskLabel,
    Topic,
    Workstream,
    utcnow,
)
from freshkeep.demo.schemas import (
    MAX_ID,
    DecisionIn,
    DecisionOut,
    ProgressIn,
    ProgressOut,
    TaskIn,
    TaskOut,
    TaskPatch,
    TopicIn,
    TopicOut,
    WorkstreamIn,
    WorkstreamOut,
    responses,
)
from freshkeep.exceptions import ArtifactBuildError, StoreError
from freshkeep.integrations.guards import error_id
from freshkeep.integrations.routes import cached_route
from freshkeep.integrations.starlette import causal_token
from freshkeep.sql.engine import SQLITE_BEGIN

M = TypeVar("M", bound=Base)
log = logging.getLogger("freshkeep.demo")
_EXPORTS = "freshkeep.demo.exports"

ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("GET", "/state/summary", "the cached summary (ETag, 304, ?refresh=true)"),
    ("GET", "/state/stats", "counters of the keeper and its views"),
    ("GET", "/topics", "list topics"),
    ("GET", "/topics/{id}/summary", "one topic's cached summary (ETag, 304, ?refresh=true)"),
    ("GET", "/topics/{id}/export", "the topic's export bundle (ZIP; redirect to a signed URL)"),
    ("POST", "/topics", "create a topic {name}"),
    ("POST", "/workstreams", "create a workstream {topic_id, name}"),
    ("POST", "/tasks", "create a task {workstream_id, title, status}"),
    ("GET", "/tasks/{id}", "read a task"),
    ("PATCH", "/tasks/{id}", "change a task {status?, title?, workstream_id?}"),
    ("DELETE", "/tasks/{id}", "delete a task"),
    ("POST", "/decisions", "record a decision {topic_id, title, status, blocking}"),
    ("POST", "/progress", "post a progress event {topic_id, event_type, summary, author}"),
    ("GET", "/freshkeep", "live dashboard (sign in with ?token=<admin token>)"),
    ("POST", "/admin/views/{view}/invalidate", "drop a view's entry or ?section= (admin)"),
    ("POST", "/admin/exports/gc", "collect the exports, or ?topic='s only (admin)"),
    ("GET", "/admin/processors/history", "who ran which processor by hand (admin)"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/docs", "interactive API docs (OpenAPI at /openapi.json)"),
)

_BODY = responses(
    e400="the body cannot be read (e.g. a malformed Content-Length)",
    e413="the body is larger than the hub's limit (max_body_bytes)",
    e422="the body or a parameter is invalid: every problem, with where it is",
)
_NOT_FOUND = responses(e404="an id does not exist")
_PATH_ID = responses(e422="the id is not an integer from 1 to 2**31 - 1")
_SUMMARY_400 = responses(e400="a malformed X-Freshkeep-Min-Revision header")


def get_hub(request: Request) -> Hub:
    """The hub of the application serving ``request``."""
    return cast(Hub, request.app.state.hub)


async def _session(request: Request, response: Response) -> AsyncIterator[AsyncSession]:
    hub = get_hub(request)
    async with hub.sessionmaker() as session:
        causal_token(response, session, hub.keeper)  # X-Freshkeep-Revision on each commit
        session.info[_EXPORTS] = hub.exports
        yield session


async def _commit(session: AsyncSession) -> None:
    """Commit a write. In the same transaction, first raise the export revision of every topic
    it touched and enqueue their prebuild (one job): the write and its job commit together."""
    exports: TopicExports = session.info[_EXPORTS]
    await exports.before_commit(session)
    await session.commit()


async def _hub(request: Request) -> Hub:
    # An async dependency: FastAPI runs a sync one in a worker thread on every request.
    return get_hub(request)


HubDep = Annotated[Hub, Depends(_hub)]
SessionDep = Annotated[AsyncSession, Depends(_session)]


async def _write_session(session: SessionDep) -> AsyncSession:
    # A writing transaction takes SQLite's write lock when it begins, so that another commit
    # between its reads and its first write (e.g. a job's) makes it wait, not fail.
    await session.connection(execution_options={SQLITE_BEGIN: "IMMEDIATE"})
    return session


WriteSessionDep = Annotated[AsyncSession, Depends(_write_session)]

TopicId = Annotated[int, Path(ge=1, le=MAX_ID, description="a topic's id (1 to 2**31 - 1)")]
TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="a task's id (1 to 2**31 - 1)")]

router = APIRouter(route_class=StrictJSONRoute)  # NaN, Infinity, lone surrogates: 422


def _not_found(what: str, ident: int) -> HTTPException:
    return HTTPException(404, detail=f"{what} {ident} does not exist")


async def _get(session: AsyncSession, model: type[M], ident: int, what: str) -> M:
    if ident not in ID_RANGE:  # no row has it, and PostgreSQL would refuse the query
        raise _not_found(what, ident)
    obj = await session.get(model, ident)
    if obj is None:
        raise _not_found(what, ident)
    return obj


async def _task_out(session: AsyncSession, task: Task) -> TaskOut:
    topic_id = await session.scalar(
        select(Workstream.topic_id).where(Workstream.id == task.workstream_id)
    )
    fields = {name: getattr(task, name) for name in TaskOut.model_fields if name != "topic_id"}
    return TaskOut.model_validate(fields | {"topic_id": topic_id})


@router.get("/", include_in_schema=False)
async def index() -> dict[str, Any]:
    return {
        "service": "freshkeep demo hub",
        "endpoints": [{"method": m, "path": p, "what": w} for m, p, w in ENDPOINTS],
    }


@router.get(
    "/state/summary",
    tags=["state"],
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the summary"},
        304: {"description": "If-None-Match matched the current ETag"},
        **_SUMMARY_400,
        **responses(e503="no value within the view's bounds can be served"),
    },
)
@cached_route(lambda request: get_hub(request).summary)
async def state_summary() -> None:
    """Topics, totals, blocking decisions and the newest progress, cached by freshkeep.

    Headers: ``ETag``, ``X-Freshkeep-Cache`` (hit, section, stale, miss, error-stale),
    ``X-Freshkeep-Revision`` and ``Cache-Status``. ``?refresh=true`` or ``Cache-Control:
    no-cache`` rebuild it now.
    """


@router.get("/state/stats", tags=["state"])
async def state_stats(request: Request, hub: HubDep) -> dict[str, Any]:
    """Counters of the keeper and of every view (reads by status, builds per section).

    Without the admin token, an error's text (which may hold SQL, parameters or paths) is
    cut to its type: ``last_error: "OperationalError"``."""
    stats = hub.keeper.snapshot().to_dict()
    token = hub.keeper.settings.admin_token
    if bearer_ok(request.headers.get("authorization"), token.get_secret_value() if token else None):
        return stats
    return cast(dict[str, Any], _public(stats))


_ERROR_FIELDS = frozenset({"last_error", "last_poisoned", "error"})


def _public(value: Any) -> Any:
    """``value`` with the text of every error field cut to the error's type."""
    if isinstance(value, dict):
        return {
            k: (v.split(":", 1)[0] if k in _ERROR_FIELDS and isinstance(v, str) else _public(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


@router.get("/topics", tags=["topics"])
async def list_topics(session: SessionDep) -> list[TopicOut]:
    topics = await session.scalars(select(Topic).order_by(Topic.id))
    return [TopicOut.model_validate(t) for t in topics]


@router.get("/topics/{topic_id}", tags=["topics"], responses=_NOT_FOUND | _PATH_ID)
async def get_topic(topic_id: TopicId, session: SessionDep) -> TopicOut:
    return TopicOut.model_validate(await _get(session, Topic, topic_id, "topic"))


@router.get(
    "/topics/{topic_id}/summary",
    tags=["topics"],
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "the topic's summary"},
        304: {"description": "If-None-Match matched the current ETag"},
        **_SUMMARY_400,
        **responses(
            e404="the topic does not exist",
            e503="no value within the view's bounds can be served",
        ),
        **_PATH_ID,
    },
)
@cached_route(
    lambda request: get_hub(request).topic_summary, not_found="topic {topic_id} does not exist"
)
async def topic_summary(topic_id: TopicId) -> None:
    """The topic, its workstreams with their tasks by status, its decisions and its newest
    progress, cached by freshkeep per topic: a write to another topic leaves it a hit.

    Headers as ``/state/summary``: ``ETag`` (``If-None-Match`` answers ``304``),
    ``X-Freshkeep-Cache`` (hit, miss, error-stale), ``X-Freshkeep-Revision`` (the topic's
    partitions), ``Cache-Status``; ``?refresh=true`` rebuilds it now. The view's value of a
    topic that does not exist is null: cached like any other (the topic's creation bumps its
    partition), answered 404.
    """


@router.get(
    "/topics/{topic_id}/export",
    tags=["topics"],
    response_class=Response,
    responses={
        200: {"content": {"application/json": {}}, "description": "with Accept: JSON"},
        307: {"description": "redirect to the bundle's signed (or presigned) URL"},
        **responses(
            e404="the topic does not exist",
            e503="the bundle cannot be built and no earlier one can be served",
        ),
        **_PATH_ID,
    },
)
async def export_topic(
    topic_id: TopicId, request: Request, session: SessionDep, hub: HubDep
) -> Response:
    """The topic's export bundle: a ZIP of ``topic.json`` (topic, workstreams, tasks,
    decisions), ``tasks.csv`` and ``decisions.csv``, prebuilt after each write to the topic.

    Redirects (``307``) to the bundle's URL, or answers its metadata as JSON when the request
    accepts ``application/json``. ``X-Freshkeep-Cache``: ``hit`` (prebuilt, no build),
    ``miss`` (built now) or ``error-stale`` (the rebuild failed; the previous bundle).
    """
    await _get(session, Topic, topic_id, "topic")
    cache_header = hub.keeper.settings.header_cache
    try:
        art = await hub.exports.get(session, topic_id)
    except (ArtifactBuildError, StoreError) as exc:
        # The error may hold SQL, parameters or paths: logged under an id the body gives.
        ident = error_id()
        log.error("export of topic %s unavailable (error id %s): %s", topic_id, ident, exc)
        return JSONResponse(
            {
                "error": "export-unavailable",
                "detail": f"the export of topic {topic_id} cannot be built now; retry shortly",
                "error_id": ident,
            },
            status_code=503,
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        )
    headers = {cache_header: art.status, "Cache-Control": "no-store"}
    if "application/json" in request.headers.get("accept", ""):
        body = {
            "topic_id": topic_id,
            "key": art.key,
            "id": art.id,
            "size": art.size,
            "url": art.url,
            "url_expires_at": art.url_expires_at,
            "created_at": art.created_at,
            "expires_at": art.expires_at,
            "status": art.status,
        }
        return JSONResponse(body, headers=headers)
    return RedirectResponse(art.url, status_code=307, headers=headers)


@router.post(
    "/topics",
    tags=["topics"],
    status_code=201,
    responses=responses(e409="a topic with that name exists") | _BODY,
)
async def create_topic(body: TopicIn, session: WriteSessionDep) -> TopicOut:
    if await session.scalar(select(Topic.id).where(Topic.name == body.name)) is not None:
        raise HTTPException(409, detail=f"a topic named {body.name!r} already exists")
    topic = Topic(name=body.name, description=body.description)
    session.add(topic)
    try:
        await _commit(session)
    except IntegrityError:  # created concurrently under the same name
        await session.rollback()
        raise HTTPException(409, detail=f"a topic named {body.name!r} already exists") from None
    return TopicOut.model_validate(topic)


@router.post("/workstreams", tags=["workstreams"], status_code=201, responses=_NOT_FOUND | _BODY)
async def create_workstream(body: WorkstreamIn, session: WriteSessionDep) -> WorkstreamOut:
    await _get(session, Topic, body.topic_id, "topic")
    if body.owner_id is not None:
        await _get(session, Member, body.owner_id, "member")
    ws = Workstream(topic_id=body.topic_id, name=body.name, owner_id=body.owner_id)
    session.add(ws)
    await _commit(session)
    return WorkstreamOut.model_validate(ws)


@router.post("/tasks", tags=["tasks"], status_code=201, responses=_NOT_FOUND | _BODY)
async def create_task(body: TaskIn, session: WriteSessionDep) -> TaskOut:
    await _get(session, Workstream, body.workstream_id, "workstream")
    if body.assignee_id is not None:
        await _get(session, Member, body.assignee_id, "member")
    now = utcnow()
    task = Task(
        workstream_id=body.workstream_id,
        title=body.title,
        status=body.status,
        assignee_id=body.assignee_id,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    await _commit(session)
    return await _task_out(session, task)


@router.get("/tasks/{task_id}", tags=["tasks"], responses=_NOT_FOUND | _PATH_ID)
async def get_task(task_id: TaskId, session: SessionDep) -> TaskOut:
    return await _task_out(session, await _get(session, Task, task_id, "task"))


@router.patch("/tasks/{task_id}", tags=["tasks"], responses=_NOT_FOUND | _BODY)
async def patch_task(task_id: TaskId, body: TaskPatch, session: WriteSessionDep) -> TaskOut:
    task = await _get(session, Task, task_id, "task")
    if body.workstream_id is not None:
        await _get(session, Workstream, body.workstream_id, "workstream")
        task.workstream_id = body.workstream_id
    if body.status is not None:
        task.status = body.status
    if body.title is not None:
        task.title = body.title
    if session.is_modified(task):
        task.updated_at = utcnow()
    await _commit(session)
    return await _task_out(session, task)


@router.delete("/tasks/{task_id}", tags=["tasks"], status_code=204, responses=_NOT_FOUND | _PATH_ID)
async def delete_task(task_id: TaskId, session: WriteSessionDep) -> Response:
    """Delete a task with its comments and labels; its progress events stay, without it."""
    task = await _get(session, Task, task_id, "task")
    # Through the ORM: the rows deleted are seen whole (the summary applies them as a delta).
    for row in await session.scalars(select(Comment).where(Comment.task_id == task_id)):
        await session.delete(row)
    for label in await session.scalars(select(TaskLabel).where(TaskLabel.task_id == task_id)):
        await session.delete(label)
    await session.flush()  # before the task: their foreign keys refer to it
    # The topics of its events (a task moved to another topic keeps its old events there),
    # named in the UPDATE: it then invalidates those topics' summaries, not every topic's.
    topics = list(
        await session.scalars(
            select(ProgressEvent.topic_id).where(ProgressEvent.task_id == task_id).distinct()
        )
    )
    if topics:
        await session.execute(
            update(ProgressEvent)
            .where(ProgressEvent.topic_id.in_(topics), ProgressEvent.task_id == task_id)
            .values(task_id=None)
        )
    await session.delete(task)
    await _commit(session)
    return Response(status_code=204)


@router.post("/decisions", tags=["decisions"], status_code=201, responses=_NOT_FOUND | _BODY)
async def create_decision(body: DecisionIn, session: WriteSessionDep) -> DecisionOut:
    await _get(session, Topic, body.topic_id, "topic")
    now = utcnow()
    decision = Decision(
        topic_id=body.topic_id,
        title=body.title,
        status=body.status,
        blocking=body.blocking,
        created_at=now,
        decided_at=now if body.status == "decided" else None,
    )
    session.add(decision)
    await _commit(session)
    return DecisionOut.model_validate(decision)


@router.post(
    "/progress",
    tags=["progress"],
    status_code=201,
    responses=_NOT_FOUND | _BODY | responses(e409="the task belongs to another topic"),
)
async def create_progress(body: ProgressIn, session: WriteSessionDep) -> ProgressOut:
    await _get(session, Topic, body.topic_id, "topic")
    if body.task_id is not None:
        task = await _get(session, Task, body.task_id, "task")
        topic_id = await session.scalar(
            select(Workstream.topic_id).where(Workstream.id == task.workstream_id)
        )
        if topic_id != body.topic_id:
            raise HTTPException(
                409, detail=f"task {task.id} belongs to topic {topic_id}, not {body.topic_id}"
            )
    event = ProgressEvent(
        topic_id=body.topic_id,
        task_id=body.task_id,
        event_type=body.event_type,
        summary=body.summary,
        author=body.author,
        created_at=utcnow(),
    )
    session.add(event)
    await _commit(session)
    return ProgressOut.model_validate(event)
