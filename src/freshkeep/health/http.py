"""Health over HTTP: ``GET /health`` (public headline) and ``GET /health/detailed`` (admin).

- ``GET /health``: ``{"status": "ok" | "degraded" | "unhealthy", "generated_at": ...}``;
  ``200`` when ok or degraded, ``503`` when unhealthy, so a load balancer or orchestrator
  takes an instance out only when it is unhealthy. No authentication; no detail.
- ``GET /health/detailed``: every check (name, level, detail, data) and the counts per level,
  with the same status codes. It requires ``Authorization: Bearer <admin token>`` (the
  ``FRESHKEEP_ADMIN_TOKEN`` setting, compared in constant time): a missing or wrong token is
  ``401`` with ``WWW-Authenticate: Bearer``; with no token configured the endpoint is off
  (``404``). Every answer is JSON with ``Cache-Control: no-store``.

:func:`health_routes` returns the two routes (``Starlette(routes=health_routes(keeper))``, or
``app.include_router(APIRouter(routes=health_routes(keeper)))`` with FastAPI);
:func:`health_router` wraps them in a router (a FastAPI ``APIRouter`` when FastAPI is
installed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import orjson

from freshkeep.core.auth import bearer_ok
from freshkeep.exceptions import missing_extra
from freshkeep.health._registry import Health

try:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute, Route, Router
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", exc.name or "starlette") from exc

if TYPE_CHECKING:
    from pydantic import SecretStr

    from freshkeep.keeper import Keeper

log = logging.getLogger("freshkeep.health")


class _FromSettings:
    def __repr__(self) -> str:
        return "FROM_SETTINGS"


FROM_SETTINGS: Final = _FromSettings()
"""The default ``admin_token`` of :func:`health_router`: the keeper's ``admin_token``
setting (``FRESHKEEP_ADMIN_TOKEN``)."""

_HEADERS = {"cache-control": "no-store"}


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    content = orjson.dumps(body, default=str, option=orjson.OPT_NON_STR_KEYS)
    return Response(
        content, status, headers=_HEADERS | (headers or {}), media_type="application/json"
    )


def health_routes(
    source: Keeper | Health,
    *,
    admin_token: str | SecretStr | _FromSettings | None = FROM_SETTINGS,
    path: str = "/health",
    max_age: float = 0.0,
) -> list[BaseRoute]:
    """The routes ``GET {path}`` and ``GET {path}/detailed`` for the health of ``source`` (a
    keeper, or a :class:`~freshkeep.health.Health`); see the module docstring.

    ``admin_token`` guards the detailed endpoint; ``None`` turns it off (``404``). Default: the
    keeper's ``admin_token`` setting. ``max_age`` (seconds, default 0: every request runs the
    checks) answers from the previous report while it is younger than that, for probes that
    come often.
    """
    health = source if isinstance(source, Health) else source.health
    token = _token(health, admin_token)

    async def summary(request: Request) -> Response:
        report = await health.report(max_age)
        return _json(report.as_dict(detailed=False), report.http_status)

    async def detailed(request: Request) -> Response:
        if token is None:
            return _json(
                {"detail": "the detailed health endpoint is off: set FRESHKEEP_ADMIN_TOKEN"},
                404,
            )
        if not bearer_ok(request.headers.get("authorization"), token):
            return _json(
                {"detail": "a valid admin bearer token is required"},
                401,
                {"www-authenticate": 'Bearer realm="freshkeep"'},
            )
        report = await health.report(max_age)
        return _json(report.as_dict(), report.http_status)

    return [
        Route(path, summary, methods=["GET"], name="freshkeep-health"),
        Route(f"{path}/detailed", detailed, methods=["GET"], name="freshkeep-health-detailed"),
    ]


def health_router(
    source: Keeper | Health,
    *,
    admin_token: str | SecretStr | _FromSettings | None = FROM_SETTINGS,
    path: str = "/health",
    max_age: float = 0.0,
) -> Router:
    """:func:`health_routes` as a router: a FastAPI ``APIRouter`` when FastAPI is installed
    (``app.include_router(...)``; type it with ``cast(APIRouter, ...)`` under mypy), else a
    Starlette ``Router``."""
    routes = health_routes(source, admin_token=admin_token, path=path, max_age=max_age)
    try:
        from fastapi import APIRouter
    except ImportError:
        return Router(routes=list(routes))
    return APIRouter(routes=list(routes), tags=["health"])


def _token(health: Health, given: str | SecretStr | _FromSettings | None) -> str | None:
    if isinstance(given, _FromSettings):
        keeper = health.keeper
        secret = keeper.settings.admin_token if keeper is not None else None
        return secret.get_secret_value() if secret is not None else None
    if given is None or isinstance(given, str):
        return given or None
    return given.get_secret_value() or None
