"""How the hub answers what it cannot serve: strict JSON, and error bodies that never leak.

- Request bodies are parsed strictly (:func:`strict_json`): ``NaN``, ``Infinity``, a lone
  surrogate (``"\\ud800"``), bytes that are not UTF-8, a number too large for a double are
  ``422`` (``json_invalid``, at the offending position), like any malformed JSON.
- A ``422`` has FastAPI's shape, ``{"detail": [{"loc", "msg", "type", "input", "ctx"}]}``,
  and always encodes: what it echoes back is made JSON-safe (a non-finite number as its name,
  a lone surrogate or undecodable bytes escaped).
- A ``405`` lists in ``Allow`` every method the path has (not only the first route's).
- An ``IntegrityError`` that a route did not handle (a row it refers to was deleted
  meanwhile) is ``409``; a database that cannot be reached is ``503`` with ``Retry-After``.
  Neither body carries SQL, parameters or a traceback: those are logged under the
  ``error_id`` the body gives, like any other error (``500 {"error": "internal",
  "error_id": ...}``, :class:`freshkeep.integrations.guards.InternalErrors`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from freshkeep.integrations.guards import RequestTooLarge, error_id, too_large_response

log = logging.getLogger("freshkeep.demo")

_NOT_JSON_NUMBER = re.compile(rb"-?(NaN|Infinity)")
_LONG_NUMBER = re.compile(rb"\d{20}")


def strict_json(body: bytes) -> Any:
    """The JSON value of ``body``, strictly (RFC 8259): raises :class:`json.JSONDecodeError`
    (with the position) for anything else, ``NaN`` and ``Infinity`` included."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        pos = exc.pos - 1 if body[exc.pos - 1 : exc.pos] == b"-" else exc.pos
        if _NOT_JSON_NUMBER.match(body, pos):
            message = "NaN and Infinity are not JSON numbers"
            raise json.JSONDecodeError(message, exc.doc, pos) from None
        raise
    if _LONG_NUMBER.search(body):  # orjson reads an integer beyond 64 bits as a float
        return json.loads(body)
    return value


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`strict_json`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A FastAPI route that parses its JSON body with :func:`strict_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON data that always encodes: a non-finite float becomes its name
    (``"NaN"``), a lone surrogate or bytes that are not UTF-8 an escape (``"\\\\ud800"``),
    an exception its message, anything else its JSON form or its ``repr``."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, BaseException):
        return json_safe(str(value))
    try:
        encoded = jsonable_encoder(value)
    except Exception:
        return json_safe(repr(value))
    return json_safe(repr(value) if encoded is value else encoded)


async def validation_error(request: Request, exc: Exception) -> Response:
    """``422`` with every problem of the request, in FastAPI's shape, always encodable."""
    assert isinstance(exc, RequestValidationError)
    errors = [{k: json_safe(v) for k, v in error.items() if k != "url"} for error in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _flat(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes, those of included routers among them (FastAPI keeps those apart)."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _flat(candidates())
        else:
            yield route


def allowed_methods(request: Request) -> list[str]:
    """Every method a route of the application serves at the request's path, sorted. A path
    that a route names literally (``/sessions/usage``) is that route's resource: the methods
    of routes with parameters that also match it (``/sessions/{user}``) are left out."""
    literal: set[str] = set()
    templated: set[str] = set()
    for route in _flat(request.app.router.routes):
        served = getattr(route, "methods", None)
        if served and route.matches(request.scope)[0] != Match.NONE:
            found = templated if "{" in getattr(route, "path", "{") else literal
            found.update(served)
    return sorted(literal or templated)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an ``HTTPException``; a ``405`` names in ``Allow`` every method
    of the path."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse(
            {"detail": f"{request.method} is not allowed here; allowed: {headers['Allow']}"},
            status_code=405,
            headers=headers,
        )
    return await http_exception_handler(request, exc)


async def integrity_error(request: Request, exc: Exception) -> Response:
    """``409``: the write refers to a row that changed meanwhile (logged with an id)."""
    ident = error_id()
    log.warning(
        "write refused by the database on %s %s (error id %s): %s",
        request.method,
        request.url.path,
        ident,
        exc,
    )
    body = {
        "detail": "the write conflicts with a concurrent change (a row it refers to was "
        "changed or deleted); read the current data and retry",
        "error_id": ident,
    }
    return JSONResponse(body, status_code=409, headers={"Cache-Control": "no-store"})


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """``503``: the database cannot be reached or is busy (logged with an id)."""
    ident = error_id()
    log.error(
        "database unavailable on %s %s (error id %s): %s",
        request.method,
        request.url.path,
        ident,
        exc,
        exc_info=exc,
    )
    body = {
        "error": "unavailable",
        "detail": "the database cannot serve this request now; retry shortly",
        "error_id": ident,
    }
    headers = {"Retry-After": "1", "Cache-Control": "no-store"}
    return JSONResponse(body, status_code=503, headers=headers)


async def request_too_large(request: Request, exc: Exception) -> Response:
    """``413`` with the limit the body went over."""
    assert isinstance(exc, RequestTooLarge)
    return too_large_response(exc.limit)


def install(app: FastAPI) -> None:
    """The hub's exception handlers, on ``app``."""
    app.add_exception_handler(RequestTooLarge, request_too_large)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(IntegrityError, integrity_error)
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(InterfaceError, database_unavailable)


__all__ = [
    "StrictJSONRequest",
    "StrictJSONRoute",
    "allowed_methods",
    "install",
    "json_safe",
    "strict_json",
]
