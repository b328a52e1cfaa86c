"""The hub's FastAPI application: :func:`create_app`, and :func:`hub_app` to run it in-process.

Run it with ``freshkeep demo``, or with uvicorn directly::

    uvicorn --factory freshkeep.demo.app:create_app
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

from freshkeep.exceptions import missing_extra

try:
    from fastapi import APIRouter, FastAPI, Security
    from fastapi.responses import Response
    from fastapi.security import HTTPBearer
    from starlette.routing import BaseRoute, Route
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("demo", exc.name or "fastapi") from exc

from freshkeep.artifacts import artifact_app
from freshkeep.demo import errors
from freshkeep.demo.api import router
from freshkeep.demo.cache_admin import cache_admin_router
from freshkeep.demo.export_admin import export_admin_router
from freshkeep.demo.hub import Hub
from freshkeep.demo.schemas import Responses, responses
from freshkeep.demo.sessions import Sessions
from freshkeep.demo.sessions import router as sessions_router
from freshkeep.demo.settings import HubSettings
from freshkeep.health.http import health_routes
from freshkeep.integrations.dashboard import Dashboard
from freshkeep.integrations.guards import BodyLimit, InternalErrors
from freshkeep.integrations.routes import HitFastPath
from freshkeep.processing.http import MAX_HISTORY, processor_routes
from freshkeep.settings import Settings

if TYPE_CHECKING:
    from freshkeep.integrations.otel import Instrumentation


def create_app(
    database_url: str | None = None, *, seed_tasks: int | None = None, **keeper_kwargs: Any
) -> FastAPI:
    """The hub as a FastAPI application.

    ``database_url``: an async SQLAlchemy URL or a SQLite file path (default: the
    ``FRESHKEEP_DATABASE_URL`` setting, ``sqlite+aiosqlite:///freshkeep-demo.db``).
    ``seed_tasks``: how many tasks to seed into an empty database at start-up (default 10,000;
    ``0`` seeds nothing; a database that holds data is never seeded). ``keeper_kwargs`` go to
    :class:`freshkeep.Keeper` (``probe``, ``resync_interval``, ``settings``, ``store``...).

    Tables are created and data seeded when the application starts (its lifespan). A URL that
    cannot work raises :class:`~freshkeep.exceptions.ConfigurationError` here; a database that
    cannot be reached raises it at start-up.

    Request bodies are limited (``max_body_bytes``, 1 MiB; session uploads
    ``max_upload_bytes``): a larger one is ``413``. Errors answer JSON that never carries SQL,
    parameters, paths or a traceback (see :mod:`freshkeep.demo.errors`).
    """
    given = keeper_kwargs.get("settings")
    settings = HubSettings.of(given if isinstance(given, Settings) else None)
    if database_url is None:
        database_url = settings.database_url
    hub = Hub.create(database_url, seed_tasks=seed_tasks, **keeper_kwargs)
    sessions = Sessions.create(hub.engine, settings)
    hub.keeper.register(sessions.pipeline)  # in the stats, the metrics and the dashboard
    # scheduled processors: their lag and stuck items show in health, each with a grace that
    # follows its own interval
    for name, every in sessions.scheduled.items():
        hub.keeper.health.watch_processor(sessions.pipeline, name, cadence=every)

    otel = _instrument(hub, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await hub.start()
        try:
            await sessions.start()
            try:
                yield
            finally:
                await sessions.stop()
        finally:
            await hub.stop()
            if otel is not None:
                otel.close()

    app = FastAPI(
        title="freshkeep demo hub",
        summary="Topics, workstreams, tasks, decisions and progress, with a cached summary.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.hub = hub
    app.state.sessions = sessions
    app.include_router(router)
    app.include_router(sessions_router)
    # the topic exports' signed URLs (objects on local storage; S3 serves presigned URLs itself)
    app.mount("/artifacts", artifact_app(hub.exports.cache))
    health = health_routes(hub.keeper, admin_token=settings.admin_token)
    secured = bool(settings.admin_token and settings.admin_token.get_secret_value())
    app.include_router(_documented(health, _HEALTH_DOCS, tags=["health"], token=secured))
    processors = processor_routes(
        sessions.pipeline, admin_token=settings.admin_token, scheduler=sessions.scheduler
    )
    app.include_router(_documented(processors, _ADMIN_DOCS, tags=["admin"], token=secured))
    # POST /admin/exports/gc[?topic=ID]: collect the exports now, one topic's or all
    app.include_router(export_admin_router(hub.exports, admin_token=settings.admin_token))
    # POST /admin/views/{view}/invalidate[?topic=ID][&section=NAME]: drop an entry or a section
    views = {"summary": hub.summary, "topic_summary": hub.topic_summary}
    keyed = frozenset({"topic_summary"})
    app.include_router(cache_admin_router(views, keyed, admin_token=settings.admin_token))
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app.state.dashboard = Dashboard(
        hub.keeper, token, pipelines=(sessions.pipeline,), schedulers=(sessions.scheduler,)
    )
    app.state.dashboard.mount(app)  # GET /freshkeep (admin token), see freshkeep.integrations
    _mount_metrics(app, hub, sessions)
    errors.install(app)
    # Outermost last: InternalErrors sees what BodyLimit lets through.
    limits = {"/sessions/": settings.max_upload_bytes}
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, paths=limits)
    app.add_middleware(InternalErrors)
    # A hit of a cached route (/state/summary, /topics/{id}/summary) is answered here, before
    # the routing and dependency injection FastAPI runs for every other request.
    app.add_middleware(HitFastPath)
    return app


_ADMIN = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="the admin token: the FRESHKEEP_ADMIN_TOKEN setting",
)
_JSON_OBJECT: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
_WRONG_TOKEN = "the admin token is missing or wrong"
_UNHEALTHY = {503: {"description": "unhealthy", "content": _JSON_OBJECT}}


def _ok(description: str) -> Responses:
    return {200: {"description": description, "content": _JSON_OBJECT}}


_HEALTH_DOCS: dict[str, dict[str, Any]] = {
    "freshkeep-health": {
        "summary": "Health headline",
        "description": "ok or degraded (200), unhealthy (503); no detail, no authentication.",
        "responses": _ok("ok or degraded") | _UNHEALTHY,
    },
    "freshkeep-health-detailed": {
        "summary": "Every health check",
        "description": "Every check and the counts per level (admin token; without one "
        "configured, the endpoint is off: 404).",
        "responses": _ok("ok or degraded") | responses(e401=_WRONG_TOKEN) | _UNHEALTHY,
        "off": responses(e404="no admin token is configured: the endpoint is off"),
    },
}
_ADMIN_DOCS: dict[str, dict[str, Any]] = {
    "freshkeep-processors": {
        "summary": "List the processors",
        "description": "Each processor: running, its last run, its schedule (admin token; "
        "without one configured, the admin routes are off: 403).",
        "responses": _ok("the processors") | responses(e401=_WRONG_TOKEN),
        "off": responses(e403="no admin token is configured: the admin routes are off"),
    },
    "freshkeep-processor-history": {
        "summary": "Who ran what",
        "description": "The record of runs started by hand, newest first (admin token; "
        "without one configured, the admin routes are off: 403).",
        "responses": _ok("the runs")
        | responses(
            e400="a limit out of range",
            e401=_WRONG_TOKEN,
            e404="no run history is kept",
            e503="the run history cannot be read",
        ),
        "off": responses(e403="no admin token is configured: the admin routes are off"),
        "openapi_extra": {
            "parameters": [
                {
                    "name": "processor",
                    "in": "query",
                    "required": False,
                    "description": "only this processor's runs",
                    "schema": {"type": "string", "maxLength": 255},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "the most runs answered",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_HISTORY},
                },
            ]
        },
    },
    "freshkeep-processor-run": {
        "summary": "Run a processor now",
        "description": "Run it now and answer the run's counts (admin token; without one "
        "configured, the admin routes are off: 403).",
        "responses": _ok("the run's counts")
        | responses(
            e401=_WRONG_TOKEN,
            e404="no processor has that name",
            e409="the processor is running",
        ),
        "off": responses(e403="no admin token is configured: the admin routes are off"),
        "openapi_extra": {
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "the processor's name (the hub's: evidence, usage)",
                    "schema": {"type": "string"},
                }
            ]
        },
    },
}


def _documented(
    routes: list[BaseRoute], docs: Mapping[str, dict[str, Any]], *, tags: list[str], token: bool
) -> APIRouter:
    """The library's Starlette routes as FastAPI routes of the same endpoints, so that the
    OpenAPI schema describes them: their statuses, and the admin token where one is needed
    (``token``: one is configured; else those routes are documented as off)."""
    out = APIRouter(tags=list(tags))
    for route in routes:
        assert isinstance(route, Route) and route.methods is not None
        doc = dict(docs[route.name])
        off = doc.pop("off", None)
        secured = off is not None and token
        if off is not None and not token:
            doc["responses"] = off
        out.add_api_route(
            route.path,
            route.endpoint,
            methods=sorted(route.methods - {"HEAD"}),
            name=route.name,
            response_class=Response,
            dependencies=[Security(_ADMIN)] if secured else None,
            **doc,
        )
    return out


def _instrument(hub: Hub, settings: HubSettings) -> Instrumentation | None:
    """OpenTelemetry spans and metrics when ``FRESHKEEP_OTEL`` asks for them (the ``otel``
    extra; without it, the error names the extra)."""
    if not settings.otel:
        return None
    from freshkeep.integrations.otel import instrument

    return instrument(hub.keeper)


def _mount_metrics(app: FastAPI, hub: Hub, sessions: Sessions) -> None:
    """Serve ``GET /metrics`` (Prometheus) when the ``prometheus`` extra is installed."""
    from starlette.routing import Route

    try:
        from freshkeep.integrations.prometheus import metrics_app
    except ImportError:
        return
    metrics = metrics_app(hub.keeper, pipelines=(sessions.pipeline,))
    app.router.routes.append(Route("/metrics", metrics, include_in_schema=False))


def get_hub(app: FastAPI) -> Hub:
    """The hub behind an application made by :func:`create_app`."""
    return cast(Hub, app.state.hub)


@asynccontextmanager
async def hub_app(
    database_url: str | None = None, *, seed_tasks: int | None = None, **keeper_kwargs: Any
) -> AsyncIterator[FastAPI]:
    """:func:`create_app`, started (tables, seed) for the duration of the ``async with``.

    For tests and scripts that call the app in-process (``httpx.ASGITransport`` does not run
    the lifespan).
    """
    app = create_app(database_url, seed_tasks=seed_tasks, **keeper_kwargs)
    async with app.router.lifespan_context(app):
        yield app


def _version() -> str:
    from freshkeep import __version__

    return __version__
