"""Processors over HTTP: list them, and run one now (Starlette or FastAPI).

- ``GET {path}``: every processor of the pipelines: ``{name: {"running": bool, "last_run":
  stats | null, "schedule": job | null}}`` (the schedule when a scheduler is given).
- ``POST {path}/{name}/run``: run processor ``name`` now; ``200`` with the run's stats
  (:meth:`~freshkeep.processing.RunStats.as_dict`), ``404`` for an unknown name, ``409`` while
  it runs (here, or on another instance with :class:`~freshkeep.processing.PostgresLocks`).
  The run is recorded in its pipeline's :class:`~freshkeep.processing.RunHistory` (if it has
  one) as run by ``principal``, via ``http``, with the operator the request names in
  ``X-Freshkeep-Operator`` (optional; ``400`` if it is not a printable name of at most 255
  characters).
- ``GET {path}/history``: the recorded runs, newest first: ``{"runs": [record, ...]}``
  (:meth:`~freshkeep.processing.RunRecord.as_dict`); ``?processor=NAME`` for one processor,
  ``?limit=N`` (default 50, at most 1000). ``404`` when no pipeline keeps a history.

All three require ``Authorization: Bearer <admin token>`` (compared in constant time by
:func:`freshkeep.core.auth.bearer_ok`): a missing or wrong token is ``401`` with
``WWW-Authenticate: Bearer``; with no token configured the routes answer ``403``. Every answer
is JSON ``{"detail": ...}`` on error, with ``Cache-Control: no-store``.

:func:`processor_routes` returns the routes (``Starlette(routes=processor_routes(...))``, or
``app.include_router(APIRouter(routes=processor_routes(...)))`` with FastAPI);
:func:`processor_router` wraps them in a router.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from freshkeep.core.auth import bearer_ok
from freshkeep.exceptions import (
    ConfigurationError,
    ProcessorBusy,
    StoreError,
    UnknownProcessorError,
    missing_extra,
)
from freshkeep.processing._history import RunBy, RunHistory, RunRecord, newest_first
from freshkeep.processing._pipeline import Pipeline

try:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute, Route, Router
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", exc.name or "starlette") from exc

if TYPE_CHECKING:
    from pydantic import SecretStr

    from freshkeep.scheduler import Scheduler

_HEADERS = {"cache-control": "no-store"}

OPERATOR_HEADER = "X-Freshkeep-Operator"
"""The request header naming the operator of a run (recorded beside the principal)."""

log = logging.getLogger("freshkeep.processing")

MAX_HISTORY = 1000
"""The most records ``GET {path}/history`` returns."""


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
    return Response(
        content, status, headers=_HEADERS | (headers or {}), media_type="application/json"
    )


def admin_denied(request: Request, token: str | None) -> Response | None:
    """The answer to a request to an admin route that it may not pass, or ``None`` when it
    carries the admin bearer ``token``: ``403`` when no token is configured (the route is off),
    ``401`` with ``WWW-Authenticate: Bearer`` when the token is missing or wrong."""
    if token is None:
        return _json({"detail": "admin endpoints are disabled: set FRESHKEEP_ADMIN_TOKEN"}, 403)
    if not bearer_ok(request.headers.get("authorization"), token):
        return _json(
            {"detail": "a valid admin bearer token is required"},
            401,
            {"www-authenticate": "Bearer"},
        )
    return None


def secret_value(token: str | SecretStr | None) -> str | None:
    """The token as a plain string; ``None`` for no token (``None`` or empty)."""
    if token is None or isinstance(token, str):
        return token or None
    return token.get_secret_value() or None


def processor_routes(
    pipelines: Pipeline | Iterable[Pipeline],
    *,
    admin_token: str | SecretStr | None,
    path: str = "/admin/processors",
    scheduler: Scheduler | None = None,
    principal: str = "admin",
) -> list[BaseRoute]:
    """The routes ``GET {path}``, ``GET {path}/history`` and ``POST {path}/{name}/run`` for
    the processors of ``pipelines`` (see the module docstring). A name is looked up in the
    pipelines in order at each request, so processors registered later are served too.

    ``admin_token`` (e.g. the ``admin_token`` setting, ``FRESHKEEP_ADMIN_TOKEN``) guards the
    routes; ``None`` turns them off (``403``). ``scheduler``: its job of each processor's name
    is shown as the processor's ``schedule``. ``principal``: who holds the admin token, as
    recorded in the run history.
    """
    RunBy(principal, "http")  # a bad principal fails here, not at the first run
    found = [pipelines] if isinstance(pipelines, Pipeline) else list(pipelines)
    token = secret_value(admin_token)
    base = path.rstrip("/")

    def pipeline_of(name: str) -> Pipeline:
        for pipeline in found:
            if name in pipeline.names():
                return pipeline
        known = ", ".join(sorted({n for p in found for n in p.names()})) or "none"
        raise UnknownProcessorError(f"no processor named {name!r} (known: {known})")

    async def listing(request: Request) -> Response:
        if (denied := admin_denied(request, token)) is not None:
            return denied
        jobs = scheduler.snapshot() if scheduler is not None else {}
        body: dict[str, dict[str, Any]] = {}
        for pipeline in found:
            for name in pipeline.names():
                stats = pipeline.last_stats.get(name)
                body.setdefault(
                    name,
                    {
                        "running": name in pipeline.running,
                        "last_run": stats.as_dict() if stats is not None else None,
                        "schedule": jobs.get(name),
                    },
                )
        return _json(body)

    async def run(request: Request) -> Response:
        if (denied := admin_denied(request, token)) is not None:
            return denied
        name = request.path_params["name"]
        operator = request.headers.get(OPERATOR_HEADER)
        try:
            by = RunBy(principal, "http", operator.strip() if operator is not None else None)
        except ConfigurationError as exc:
            return _json({"detail": f"{OPERATOR_HEADER}: {exc}"}, 400)
        try:
            stats = await pipeline_of(name).run(name, by=by)
        except UnknownProcessorError as exc:
            return _json({"detail": str(exc)}, 404)
        except ProcessorBusy:
            return _json(
                {"detail": f"processor {name!r} is already running", "processor": name}, 409
            )
        return _json(stats.as_dict())

    async def history(request: Request) -> Response:
        if (denied := admin_denied(request, token)) is not None:
            return denied
        histories: list[RunHistory] = []
        for pipeline in found:
            if pipeline.history is not None and all(h is not pipeline.history for h in histories):
                histories.append(pipeline.history)
        if not histories:
            return _json({"detail": "no run history is kept: give the Pipeline history="}, 404)
        unknown = sorted(set(request.query_params) - {"processor", "limit"})
        if unknown:
            return _json({"detail": f"unknown query parameters: {', '.join(unknown)!r}"}, 400)
        processor = request.query_params.get("processor") or None
        if processor is not None and len(processor) > 255:
            return _json({"detail": "processor must be a name of 1 to 255 characters"}, 400)
        raw = request.query_params.get("limit", "50")
        try:
            limit = int(raw)
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_HISTORY:
            return _json({"detail": f"limit must be 1 to {MAX_HISTORY}, not {raw!r}"}, 400)
        try:
            runs: list[RunRecord] = []
            for h in histories:
                runs.extend(await h.recent(processor, limit=limit))
        except StoreError as exc:
            error_id = uuid.uuid4().hex[:16]  # the error (SQL, paths) goes to the log only
            log.error("reading the run history failed (error id %s)", error_id, exc_info=exc)
            body = {"error": "unavailable", "detail": "the run history cannot be read"}
            return _json({**body, "error_id": error_id}, 503)
        return _json({"runs": [r.as_dict() for r in newest_first(runs)[:limit]]})

    return [
        Route(base or "/", listing, methods=["GET"], name="freshkeep-processors"),
        Route(f"{base}/history", history, methods=["GET"], name="freshkeep-processor-history"),
        Route(f"{base}/{{name}}/run", run, methods=["POST"], name="freshkeep-processor-run"),
    ]


def processor_router(
    pipelines: Pipeline | Iterable[Pipeline],
    *,
    admin_token: str | SecretStr | None,
    path: str = "/admin/processors",
    scheduler: Scheduler | None = None,
    principal: str = "admin",
) -> Router:
    """:func:`processor_routes` as a router: a FastAPI ``APIRouter`` when FastAPI is installed
    (``app.include_router(...)``), else a Starlette ``Router``."""
    routes = processor_routes(
        pipelines, admin_token=admin_token, path=path, scheduler=scheduler, principal=principal
    )
    try:
        from fastapi import APIRouter
    except ImportError:
        return Router(routes=routes)
    return APIRouter(routes=routes, tags=["admin"])


__all__ = [
    "OPERATOR_HEADER",
    "admin_denied",
    "processor_router",
    "processor_routes",
    "secret_value",
]
