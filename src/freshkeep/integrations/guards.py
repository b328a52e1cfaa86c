"""ASGI guards for a service's edge: a request body limit, and a catch-all for errors.

- :class:`BodyLimit` answers ``413`` with a JSON body to a request whose body is larger than a
  limit, before the application reads it: at once when ``Content-Length`` says so, else as
  soon as the chunks received add up to more (a chunked body is never read whole). Limits may
  differ per path prefix (an upload route may take more than the JSON API).
- :class:`InternalErrors` answers ``500`` with ``{"error": "internal", "error_id": ...}`` to a
  request whose handling raised: the exception (SQL, parameters, paths, the traceback) is
  logged under the id, never sent; :func:`internal_error_response` is the same for an
  exception handler.

Both are plain ASGI middleware, for Starlette and FastAPI alike::

    app.add_middleware(BodyLimit, max_bytes=1024 * 1024, paths={"/uploads/": 64 * 1024 * 1024})
    app.add_middleware(InternalErrors)  # added last: outside BodyLimit
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from freshkeep.exceptions import missing_extra

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", exc.name or "starlette") from exc

log = logging.getLogger("freshkeep.errors")

_NO_STORE = {"Cache-Control": "no-store"}


def error_id() -> str:
    """A new id for an error: logged with the error, given in the response body."""
    return uuid.uuid4().hex[:16]


class RequestTooLarge(Exception):
    """A request body went over its limit while it was read (raised from ``receive``)."""

    def __init__(self, limit: int = 0) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


def too_large_response(limit: int) -> Response:
    """The ``413`` JSON answer to a body over ``limit`` bytes."""
    body = {
        "error": "too-large",
        "detail": f"the request body is larger than {limit} bytes",
        "max_bytes": limit,
    }
    return JSONResponse(body, status_code=413, headers={**_NO_STORE, "Connection": "close"})


def _bad_length() -> Response:
    body = {
        "error": "bad-request",
        "header": "Content-Length",
        "detail": "Content-Length must be one non-negative integer",
    }
    return JSONResponse(body, status_code=400, headers={**_NO_STORE, "Connection": "close"})


def _content_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` (``None``: absent); ``-1``: present but not one
    non-negative integer (several differing values, a sign, letters)."""
    values = {v.strip() for k, v in scope.get("headers", ()) if k.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        return -1
    (value,) = values
    return int(value) if value.isdigit() else -1


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with ``413`` and a JSON body, before they are
    read whole.

    ``paths`` maps path prefixes to their own limit (the longest matching prefix wins), e.g.
    ``{"/uploads/": 64 * 1024 * 1024}``. A ``Content-Length`` over the limit is answered at
    once, without calling the application; a body without one (chunked) is counted as the
    application receives it, and the chunk that goes over the limit raises
    :class:`RequestTooLarge` in the application and is answered ``413`` (whatever the
    application made of the error). A malformed ``Content-Length`` is ``400``.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, paths: Mapping[str, int] | None = None
    ) -> None:
        limits = {"": max_bytes, **(paths or {})}
        bad = {p: n for p, n in limits.items() if isinstance(n, bool) or n < 0}
        if bad:
            raise ValueError(f"body limits must be integers >= 0, got {bad}")
        self.app = app
        self.max_bytes = max_bytes
        self._limits = sorted(limits.items(), key=lambda item: len(item[0]), reverse=True)

    def limit_for(self, path: str) -> int:
        """The limit of a request to ``path``."""
        return next(n for prefix, n in self._limits if path.startswith(prefix))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        length = _content_length(scope)
        if length is not None and length < 0:
            await _bad_length()(scope, receive, send)
            return
        if length is not None and length > limit:
            await too_large_response(limit)(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def counted() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise RequestTooLarge(limit)
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:  # the application's answer to the error is replaced by the 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await too_large_response(limit)(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except RequestTooLarge:
            if not started:
                await too_large_response(limit)(scope, receive, send)
            elif not exceeded:  # pragma: no cover - a RequestTooLarge of an inner limit
                raise


def internal_error_response(
    exc: BaseException, *, request: Request | None = None, logger: logging.Logger | None = None
) -> Response:
    """The ``500`` JSON answer to an unexpected exception: ``{"error": "internal",
    "error_id": ...}``. The exception, with its traceback, is logged under that id (logger
    ``freshkeep.errors`` unless ``logger`` is given); the body never carries it."""
    ident = error_id()
    where = f" on {request.method} {request.url.path}" if request is not None else ""
    (logger or log).error(
        "internal error%s (error id %s): %s: %s",
        where,
        ident,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    body: dict[str, Any] = {"error": "internal", "error_id": ident}
    return JSONResponse(body, status_code=500, headers=_NO_STORE)


class InternalErrors:
    """Answer ``500`` with :func:`internal_error_response` when the application raises before
    its response started; the exception is logged with an error id and not raised further
    (the server logs nothing more). After the response started it is logged and re-raised:
    the server then ends the connection."""

    def __init__(self, app: ASGIApp, *, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            response = internal_error_response(exc, request=Request(scope), logger=self.logger)
            if started:
                raise
            await response(scope, receive, send)


__all__ = [
    "BodyLimit",
    "InternalErrors",
    "RequestTooLarge",
    "error_id",
    "internal_error_response",
    "too_large_response",
]
