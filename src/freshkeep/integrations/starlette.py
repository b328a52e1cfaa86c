"""Serve views over HTTP with Starlette or FastAPI.

:func:`serve` answers a request from a view:

- ``ETag`` (weak, derived from the revision vector: the same in every process and after a
  restart); ``If-None-Match`` with the current ETag answers ``304`` without running a builder;
- ``Cache-Control: no-cache`` or ``?refresh=true`` on the request forces one single-flight
  rebuild, which is stored;
- ``X-Freshkeep-Cache`` (the read status), ``X-Freshkeep-Revision`` (the revision vector of what
  was served) and the standard RFC 9211 ``Cache-Status``; names come from the keeper's settings;
- ``X-Freshkeep-Min-Revision`` (a causal token: the revision header of a write's response)
  is never answered from an entry older than it, on any instance; a malformed one is ``400``;
- no value within the policy's bounds: ``503`` with a JSON body, never a traceback.

A request that carries an ``Authorization`` header or a non-empty session is refused
(:class:`~freshkeep.exceptions.PrincipalRequiredError`) unless the view is per-principal or
declared public: a shared entry must never hold one user's data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from freshkeep.core.entry import Read, Status, parse_revision
from freshkeep.exceptions import PrincipalRequiredError, UnavailableError, missing_extra
from freshkeep.views import View

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", "starlette") from exc

_TRUE = frozenset({"1", "true", "yes", "on"})

# RFC 9211 parameters for each read status.
_CACHE_STATUS: dict[Status, str] = {
    "hit": "hit",
    "stale": "hit; fwd=stale; detail=stale-while-revalidate",
    "error-stale": "hit; fwd=stale; detail=stale-if-error",
    "section": "fwd=partial; stored",
    "miss": "fwd=miss; stored",
}


def wants_refresh(request: Request) -> bool:
    """Whether the request asks for a rebuild (``?refresh=true`` or ``Cache-Control: no-cache``)."""
    if request.query_params.get("refresh", "").lower() in _TRUE:
        return True
    cc = request.headers.get("cache-control")
    if cc:
        directives = {d.strip().split("=", 1)[0].lower() for d in cc.split(",")}
        return "no-cache" in directives
    return False


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of an ``If-None-Match`` value against ``etag`` (RFC 9110 13.1.2)."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


def _is_authenticated(request: Request) -> bool:
    return "authorization" in request.headers or bool(request.scope.get("session"))


def cache_status(read: Read, name: str, *, refresh: bool = False) -> str:
    """The RFC 9211 ``Cache-Status`` value of a read."""
    params = _CACHE_STATUS[read.status]
    if read.status == "miss" and refresh:
        params = "fwd=request; stored"
    if read.collapsed:
        params += "; collapsed"
    return f"{name}; {params}"


async def serve(
    request: Request,
    view: View,
    *,
    key: Hashable = None,
    principal: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Answer ``request`` from ``view`` (for ``key`` and, if per-principal, ``principal``)."""
    if _is_authenticated(request) and not (view.public or view.per_principal):
        raise PrincipalRequiredError(
            f"view {view.name!r} is shared but the request to {request.url.path} is "
            "authenticated: key the view by principal (per_principal=True) or declare it "
            "public=True"
        )
    s = view.keeper.settings
    refresh = wants_refresh(request)
    min_revision = None
    token = request.headers.get(s.header_min_revision)
    if token:
        try:
            min_revision = parse_revision(token)
        except ValueError as exc:
            return JSONResponse(
                {"error": "bad-request", "header": s.header_min_revision, "detail": str(exc)},
                status_code=400,
            )
    private = view.per_principal
    inm = request.headers.get("if-none-match")
    if inm and not refresh and min_revision is None:
        try:
            etag = await view.current_etag(key, principal=principal)
        except UnavailableError:
            pass  # the read below serves error-stale within its bounds, or answers 503
        else:
            if etag_matches(inm, etag):
                return _not_modified(etag, private, s.cache_status_name)
    try:
        read = await view.get(key, principal=principal, refresh=refresh, min_revision=min_revision)
    except UnavailableError as exc:
        return JSONResponse(
            {"error": "unavailable", "view": view.name, "detail": str(exc)},
            status_code=503,
            headers={"Retry-After": "1", "Cache-Control": "no-store"},
        )
    if inm and not refresh and etag_matches(inm, read.etag):
        return _not_modified(read.etag, private, s.cache_status_name)
    out = {
        "ETag": read.etag,
        "Cache-Control": "private, no-cache" if private else "no-cache",
        s.header_cache: read.status,
        s.header_revision: read.revision,
        "Cache-Status": cache_status(read, s.cache_status_name, refresh=refresh),
    }
    if private:
        out["Vary"] = "Authorization, Cookie"
    if headers:
        out.update(headers)
    return Response(read.body, media_type="application/json", headers=out)


def _not_modified(etag: str, private: bool, name: str) -> Response:
    return Response(
        status_code=304,
        headers={
            "ETag": etag,
            "Cache-Control": "private, no-cache" if private else "no-cache",
            "Cache-Status": f"{name}; hit; detail=not-modified",
        },
    )


def endpoint(
    view: View,
    *,
    key: Callable[[Request], Hashable] | None = None,
    principal: Callable[[Request], str | None] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette/FastAPI endpoint serving ``view``; ``key`` and ``principal`` are read from
    the request by the given functions."""

    async def serve_view(request: Request) -> Response:
        return await serve(
            request,
            view,
            key=key(request) if key is not None else None,
            principal=principal(request) if principal is not None else None,
        )

    serve_view.__name__ = f"serve_{view.name}"
    return serve_view


def unavailable_response(exc: UnavailableError) -> Response:
    """A ``503`` JSON response for an :class:`UnavailableError` (for exception handlers)."""
    body: dict[str, Any] = {"error": "unavailable", "detail": str(exc)}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
