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

:func:`causal_token` sets ``X-Freshkeep-Revision`` on a write's response from the revisions its
SQLAlchemy session committed: the token a client sends back as ``X-Freshkeep-Min-Revision``.

A request that carries an ``Authorization`` header or a non-empty session, read from a shared
view (neither per-principal nor declared public), gets the shared value: its builder never sees
the principal, so it holds no user's data. The response says ``Cache-Control: private,
no-cache`` (a shared HTTP cache must not store it), and the first such request of each view is
logged, since the view may be meant ``public=True`` or ``per_principal=True``.

A public view with a :class:`~freshkeep.core.shared_cache.SharedCache` says ``public,
max-age=0, s-maxage=N`` (and ``stale-while-revalidate``, ``stale-if-error``) on a current
value and on the ``304`` that revalidates one, ``no-cache`` on a stale one, and ``private,
no-cache`` to a request with credentials.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from freshkeep.core import tracing
from freshkeep.core.auth import bearer_ok
from freshkeep.core.entry import Entry, Read, Status, format_revision, parse_revision
from freshkeep.exceptions import UnavailableError, missing_extra
from freshkeep.settings import Settings
from freshkeep.views import View

try:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", "starlette") from exc

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from freshkeep.keeper import Keeper

_TRUE = frozenset({"1", "true", "yes", "on"})

# RFC 9211 parameters for each read status.
_CACHE_STATUS: dict[Status, str] = {
    "hit": "hit",
    "stale": "hit; fwd=stale; detail=stale-while-revalidate",
    "error-stale": "hit; fwd=stale; detail=stale-if-error",
    "section": "fwd=partial; stored",
    "miss": "fwd=miss; stored",
}

log = logging.getLogger("freshkeep.starlette")


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


def _admin_token(s: Settings) -> str | None:
    token = s.admin_token
    return token.get_secret_value() if token is not None else None


def _is_authenticated(request: Request) -> bool:
    return "authorization" in request.headers or bool(request.scope.get("session"))


def cache_status(read: Read, name: str, *, refresh: bool = False) -> str:
    """The RFC 9211 ``Cache-Status`` value of a read."""
    params = _CACHE_STATUS[read.status]
    if read.status == "miss" and refresh:
        params = "fwd=request; stored"
    elif read.reason == "expired":  # older than the policy's max_age
        params = params.replace("detail=stale-while-revalidate", "detail=expired")
        if "detail=" not in params:
            params += "; detail=expired"
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
    scope = request.scope
    if not scope["query_string"] and headers is None and not scope.get("session"):
        # The common request (no query, no conditional, refresh, token or credentials) is
        # answered by one pass over the raw headers, and a hit by a pre-encoded header list.
        special = _special_headers(view.keeper.settings)
        for name, _ in scope["headers"]:
            if name in special:
                break
        else:
            try:
                read = await view.get(key, principal=principal)
            except UnavailableError as exc:
                return _unavailable(view, exc)
            if tracing.on_read is not None:  # OpenTelemetry: the request span says the status
                tracing.on_read(view.name, read.status)
            if read.status == "hit":
                return EntryResponse(read.entry, _hit_headers(read, view))
            return _response(read, view, refresh=False, headers=None)
    private = view.per_principal
    shielded = False
    if _is_authenticated(request) and not (view.public or view.per_principal):
        # A shared view's builder is never given the principal: its value is everyone's, so
        # it is served. Its reads run in an empty context (a build they start must not see the
        # user in a context variable either), and a response to a request with credentials
        # must not be stored by a shared cache (RFC 9111 3.5): it says private.
        private = shielded = True
        headers = {**(headers or {}), "Cache-Control": "private, no-cache"}
        _warn_shared(view, request.url.path)
    elif view.shared_cache is not None and _is_authenticated(request):
        # A response to a request with credentials stays out of shared caches: its public,
        # s-maxage directives would let them store it (RFC 9111 3.5).
        private = True
        headers = {**(headers or {}), "Cache-Control": "private, no-cache"}
    s = view.keeper.settings
    refresh = wants_refresh(request)
    if refresh and not view.may_force(
        key,
        principal=principal,
        authorized=bearer_ok(request.headers.get("authorization"), _admin_token(s)),
    ):
        refresh = False  # a read validated against the current revisions (RFC 9111 5.2.1.4)
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
    inm = request.headers.get("if-none-match")
    if inm and not refresh and min_revision is None:
        try:
            etag = await _run(view.current_etag(key, principal=principal), shielded)
        except UnavailableError:
            pass  # the read below serves error-stale within its bounds, or answers 503
        else:
            if etag_matches(inm, etag):
                if tracing.on_read is not None:
                    tracing.on_read(view.name, "hit")
                return _not_modified(
                    etag, _cache_control(view, "hit", private), s.cache_status_name
                )
    try:
        read = await _run(
            view.get(key, principal=principal, refresh=refresh, min_revision=min_revision),
            shielded,
        )
    except UnavailableError as exc:
        return _unavailable(view, exc)
    if tracing.on_read is not None:
        tracing.on_read(view.name, read.status)
    if inm and not refresh and etag_matches(inm, read.etag):
        return _not_modified(
            read.etag, _cache_control(view, read.status, private), s.cache_status_name
        )
    return _response(read, view, refresh=refresh, headers=headers)


def _headers_of(read: Read, view: View, *, refresh: bool) -> dict[str, str]:
    s = view.keeper.settings
    out = {
        "ETag": read.etag,
        "Cache-Control": _cache_control(view, read.status, view.per_principal),
        s.header_cache: view.labels.get(read.status, read.status),
        s.header_revision: read.revision,
        "Cache-Status": cache_status(read, s.cache_status_name, refresh=refresh),
    }
    if read.reason is not None:
        out[s.header_reason] = read.reason
    if view.per_principal:
        out["Vary"] = "Authorization, Cookie"
    return out


def _cache_control(view: View, status: Status, private: bool) -> str:
    """``no-cache`` (revalidate each use with the ETag), ``private`` for a reader's own value;
    a view's :class:`~freshkeep.core.shared_cache.SharedCache` directives on a current value
    (a stale one is already behind its sources: a shared cache must not keep it longer)."""
    if private:
        return "private, no-cache"
    shared = view.shared_cache
    if shared is None or status == "stale" or status == "error-stale":
        return "no-cache"
    if status == "section" and _may_keep_stale_sections(view):
        # Sections rebuilt in line beside others served stale until a background refresh.
        return "no-cache"
    return shared.cache_control


def _may_keep_stale_sections(view: View) -> bool:
    """Whether a ``section`` read of ``view`` may serve some sections stale (a policy of the
    view or of a section is stale-while-revalidate)."""
    policies = (view.policy, *(s.policy for s in view.sections.values() if s.policy is not None))
    return any(p.mode == "swr" for p in policies)


def _response(read: Read, view: View, *, refresh: bool, headers: dict[str, str] | None) -> Response:
    out = _headers_of(read, view, refresh=refresh)
    if headers:
        out.update(headers)
    return EntryResponse(read.entry, _raw_headers(read.entry, out))


def _unavailable(view: View, exc: UnavailableError) -> Response:
    if tracing.on_read is not None:
        tracing.on_read(view.name, "unavailable")
    return unavailable_response(exc, view=view.name)


_SPECIAL: dict[int, tuple[Settings, frozenset[bytes]]] = {}


def _special_headers(s: Settings) -> frozenset[bytes]:
    """The request headers that take a request off the fast path (lower-case bytes)."""
    cached = _SPECIAL.get(id(s))
    if cached is not None and cached[0] is s:
        return cached[1]
    names = frozenset(
        {b"authorization", b"cache-control", b"if-none-match", b"pragma"}
        | {s.header_min_revision.lower().encode("latin-1")}
    )
    _SPECIAL[id(s)] = (s, names)
    return names


_HIT_HEADERS = "freshkeep.starlette.hit"


def _hit_headers(read: Read, view: View) -> list[tuple[bytes, bytes]]:
    """The raw headers of a hit on this entry, encoded once and kept on the entry."""
    memo = read.entry.memo
    raw = memo.get(_HIT_HEADERS)
    if raw is None:
        raw = _raw_headers(read.entry, _headers_of(read, view, refresh=False))
        memo[_HIT_HEADERS] = raw
    return list(raw)  # a copy: middleware may add headers to a response


def _raw_headers(entry: Entry, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """``headers`` with the entry's ``Content-Length`` and ``Content-Type``, encoded (its body
    is not joined for its length)."""
    headers = {**headers, "content-length": str(entry.body_size)}
    return Response(None, media_type="application/json", headers=headers).raw_headers


class EntryResponse(Response):
    """A ``200`` answering an entry's body with its raw headers already encoded.

    A body kept in chunks (:attr:`Entry.chunks <freshkeep.core.entry.Entry.chunks>`, after a
    delta) is sent as they are, one body message each, and joined after the response for the
    hits that follow; :attr:`body` joins them when asked (e.g. by a middleware).
    """

    def __init__(self, entry: Entry, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = 200
        self.background = None
        self.entry = entry
        self.raw_headers = raw_headers

    @property
    def body(self) -> bytes:  # type: ignore[override]
        """The body, joined."""
        return self.entry.body

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes of the body (or all of it when shorter)."""
        out = b""
        for chunk in self.entry.chunks:
            out += chunk[: size - len(out)]
            if len(out) >= size:
                break
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        entry = self.entry
        joined = entry.joined
        if joined is not None:
            await send({"type": "http.response.body", "body": joined})
        else:
            chunks = entry.chunks
            last = len(chunks) - 1
            for i, chunk in enumerate(chunks):
                await send({"type": "http.response.body", "body": chunk, "more_body": i < last})
            # The hits that follow send one joined body: join it once, after this response.
            asyncio.get_running_loop().call_soon(_join, entry)
        if self.background is not None:  # e.g. FastAPI's background tasks
            await self.background()


def _join(entry: Entry) -> None:
    entry.body  # noqa: B018 - joined and kept on the entry


T = TypeVar("T")


async def _run(work: Coroutine[Any, Any, T], shielded: bool) -> T:
    """Await ``work``; ``shielded``: in a task of an empty context, so that what it starts
    (a build, a background refresh) sees none of the request's context variables."""
    if not shielded:
        return await work
    return await asyncio.get_running_loop().create_task(work, context=contextvars.Context())


_WARNED: weakref.WeakSet[View] = weakref.WeakSet()


def _warn_shared(view: View, path: str) -> None:
    """Log once per view that a shared view answered a request with credentials."""
    if view in _WARNED:
        return
    _WARNED.add(view)
    log.warning(
        "view %r is shared (neither per_principal nor public) and %s was asked with "
        "credentials: everyone's value is served, marked private. Declare public=True if "
        "that is meant, or per_principal=True if the value should depend on the reader",
        view.name,
        path,
    )


def _not_modified(etag: str, cache_control: str, name: str) -> Response:
    return Response(
        status_code=304,
        headers={
            "ETag": etag,
            "Cache-Control": cache_control,
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


def unavailable_response(exc: UnavailableError, *, view: str | None = None) -> Response:
    """The ``503`` JSON response :func:`serve` gives for an :class:`UnavailableError` (also
    for exception handlers), naming ``view`` when given.

    The body never carries the error itself (it may hold SQL, parameters or paths): the error
    is logged with an ``error_id``, and the body carries that id, to look it up in the log.
    """
    error_id = uuid.uuid4().hex[:16]
    log.error(
        "%s unavailable (error id %s): %s",
        f"view {view!r}" if view is not None else "a value",
        error_id,
        exc,
        exc_info=exc.__cause__ if exc.__cause__ is not None else None,
    )
    body: dict[str, Any] = {"error": "unavailable"}
    if view is not None:
        body["view"] = view
    body["detail"] = "no value within its freshness bounds can be served now; retry shortly"
    body["error_id"] = error_id
    return JSONResponse(
        body, status_code=503, headers={"Retry-After": "1", "Cache-Control": "no-store"}
    )


def causal_token(
    response: Response, session: AsyncSession | Session, keeper: Keeper
) -> Callable[[], None]:
    """Set the causal token on ``response`` when ``session`` commits: the header
    ``keeper.settings.header_revision`` (``X-Freshkeep-Revision``) with the revisions the
    commit bumped (:func:`~freshkeep.integrations.sqlalchemy.committed_revisions`). A read that
    sends it back as ``X-Freshkeep-Min-Revision`` is never answered from an entry older than
    the write, on any instance. A commit that bumped nothing (or a rollback) sets nothing; the
    last commit wins. Returns a function that stops watching the session.

    In a FastAPI dependency that yields the request's session::

        async def session(response: Response) -> AsyncIterator[AsyncSession]:
            async with sessionmaker() as s:
                causal_token(response, s, keeper)
                yield s

    The session must be one whose commits :func:`~freshkeep.integrations.sqlalchemy.track`
    watches (needs ``freshkeep[sqlalchemy]``).
    """
    try:
        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import AsyncSession
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc
    from freshkeep.integrations.sqlalchemy import committed_revisions

    sync = session.sync_session if isinstance(session, AsyncSession) else session
    header = keeper.settings.header_revision

    def set_header(committed: Session) -> None:
        revisions = committed_revisions(committed)
        if revisions:
            response.headers[header] = format_revision(revisions)

    event.listen(sync, "after_commit", set_header)

    def remove() -> None:
        if event.contains(sync, "after_commit", set_header):
            event.remove(sync, "after_commit", set_header)

    return remove
