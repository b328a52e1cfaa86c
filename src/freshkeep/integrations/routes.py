"""Cached routes for FastAPI and Starlette, and a hit fast path in front of the application.

:func:`cached_route` turns an endpoint into one served from a view, through the same code as
:func:`~freshkeep.integrations.starlette.serve` (``ETag``, ``304``, ``?refresh=true``, the
status, revision and ``Cache-Status`` headers, ``503`` JSON)::

    @app.get("/topics/{topic_id}/summary")
    @cached_route(keeper, sources=[table_source(Topic), table_source(Task, by="topic_id")])
    async def topic_summary(topic_id: int, recent: int = 5) -> dict[str, Any]:
        ...  # builds the value: the builder of the view (see Keeper.cached)

The key of a request is made from the endpoint's declared parameters (path and query), as
:meth:`Keeper.cached <freshkeep.Keeper.cached>` makes it from a call: none, ``None``; one, its
value; several, the tuple of their values (a list parameter as a tuple, in its order). A query
parameter the endpoint does not declare is no part of the key (it cannot grow the key space);
``refresh`` is read by ``serve()``. A parameter read from anywhere else (a ``Header()``, a
``Cookie()``, a body, a ``Depends()``) is refused with a
:class:`~freshkeep.exceptions.ConfigurationError`: the key could not tell its values apart.

``target`` is a :class:`~freshkeep.Keeper` (the decorated function is the builder of a new
view, its keyword arguments those of ``keeper.cached``), a :class:`~freshkeep.views.View`, or a
function of the request returning the view (the same one for every request of an
application): then the decorated function only declares the route's parameters and its
documentation, and its body is never run. A builder that raises an ``HTTPException`` below
``500`` (``raise HTTPException(404, "no such topic")``) has that answer cached as its value,
until a write moves its sources (e.g. the topic's creation); a value ``None`` can be answered
``404`` too (``not_found=``).

Principals: a per-principal view's reader comes from ``principal=`` (a function of the
request; ``None`` answers ``401``); its entries are never shared. A shared (not public) view
asked with credentials answers as ``serve()`` does: the shared value, marked ``private``.

:class:`HitFastPath` is an ASGI middleware that answers a hit of a cached route before the
framework's routing and dependency injection (for FastAPI, most of what a hit costs); anything
else falls through to the route.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args, get_origin

import orjson

from freshkeep.cached import Cached
from freshkeep.core import tracing
from freshkeep.exceptions import ConfigurationError, missing_extra
from freshkeep.views import View

try:
    from pydantic import BaseModel, TypeAdapter, ValidationError
    from pydantic.fields import FieldInfo
    from pydantic_core import PydanticUndefined
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, compile_path
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", exc.name or "starlette") from exc

from freshkeep.integrations.starlette import (
    EntryResponse,
    _hit_headers,
    _special_headers,
    serve,
)

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper

__all__ = ["HitFastPath", "RouteSpec", "cached_route"]

ViewOf = Callable[[Request], View]
Endpoint = Callable[..., Awaitable[Response]]
_MARK = "__freshkeep_route__"
_REQUEST = "freshkeep_request"
_NULL = b"null"
_ERROR = "freshkeep:http-error"
_ERROR_PREFIX = b'{"' + _ERROR.encode() + b'"'


def _answers_errors(
    fn: Callable[..., Awaitable[Any]], lists: frozenset[str]
) -> Callable[..., Awaitable[Any]]:
    """``fn``, with an ``HTTPException`` below 500 it raises kept as its value (e.g. a 404 for
    an id that does not exist: cached until a write moves its sources, like any value), with
    its headers (``Retry-After``, ``WWW-Authenticate``, ``Location``). The parameters named in
    ``lists`` (keyed as tuples) are given to ``fn`` as lists, as declared."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    async def build(*args: Any, **kwargs: Any) -> Any:
        if lists:
            bound = signature.bind(*args, **kwargs)
            for name in lists:
                if isinstance(bound.arguments.get(name), tuple):
                    bound.arguments[name] = list(bound.arguments[name])
            args, kwargs = bound.args, bound.kwargs
        try:
            return await fn(*args, **kwargs)
        except HTTPException as exc:
            if exc.status_code >= 500:
                raise
            error: dict[str, Any] = {_ERROR: exc.status_code, "detail": exc.detail}
            if exc.headers:
                error["headers"] = dict(exc.headers)
            return error

    return build


class RouteSpec:
    """What :func:`cached_route` knows of a route: its view, its parameters and how a
    request's key is made (kept on the endpoint, read by :class:`HitFastPath`)."""

    def __init__(
        self,
        view: View | ViewOf,
        params: Mapping[str, inspect.Parameter],
        *,
        principal: Callable[[Request], str | None] | None,
        not_found: str | None,
        cached: Cached[..., Any] | None = None,
    ) -> None:
        self.cached = cached
        """The cached function whose view serves the route (made from a keeper), or ``None``."""
        self._view = view if isinstance(view, View) else None
        self._view_of = None if isinstance(view, View) else view
        self.params = dict(params)
        """The declared parameters (path and query), in the key's order."""
        self.principal = principal
        self.not_found = not_found
        self._adapters = {name: _adapter(p) for name, p in self.params.items()}
        self.lists = frozenset(n for n, p in self.params.items() if _is_list(p.annotation))
        """The parameters declared as lists (repeated in a query string)."""

    def view(self, request: Request) -> View:
        """The view serving ``request``."""
        if self._view is not None:
            return self._view
        assert self._view_of is not None
        return self._view_of(request)

    def key(self, values: Mapping[str, Any], principal: str | None = None) -> Hashable:
        """The key of a request whose declared parameters are ``values`` (a list as a tuple,
        in its order), asked by ``principal``."""
        names = self.params
        if self.lists:
            values = {n: tuple(v) if n in self.lists else v for n, v in values.items()}
        if self.cached is not None:
            return self.cached.route_key(values, principal)
        if not names:
            return None
        if len(names) == 1:
            return cast(Hashable, values[next(iter(names))])
        return tuple(values[n] for n in names)

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The declared parameters from raw (path and query) values, validated as their
        annotations say; :class:`ValueError` naming a missing or invalid one."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if name in raw:
                adapter = self._adapters[name]
                if adapter is None:  # a type pydantic cannot validate: the raw value
                    out[name] = raw[name]
                    continue
                try:
                    out[name] = adapter.validate_python(raw[name])
                except ValidationError:
                    raise ValueError(name) from None
            else:
                default = _default_of(p)
                if default is _REQUIRED:
                    raise ValueError(name)
                out[name] = default
        return out


_REQUIRED = object()
"""A parameter without a default."""


def _adapter(p: inspect.Parameter) -> TypeAdapter[Any] | None:
    """What validates a raw value of ``p`` as its annotation (and a FastAPI ``Query(ge=1)``
    or ``Path(...)`` default's constraints) says (``None``: nothing can)."""
    annotation = p.annotation if p.annotation is not inspect.Parameter.empty else str
    if isinstance(p.default, FieldInfo):
        annotation = Annotated[annotation, p.default]
    try:
        return TypeAdapter(annotation)
    except Exception:  # pydantic refuses the type: the value is taken as it comes
        return None


def _default_of(p: inspect.Parameter) -> Any:
    """A parameter's default (FastAPI's ``Query(default=...)`` / ``Path`` give theirs), or
    :data:`_REQUIRED`."""
    default = p.default
    if default is inspect.Parameter.empty:
        return _REQUIRED
    if isinstance(default, FieldInfo):
        if default.default_factory is not None:
            return default.default_factory()  # type: ignore[call-arg]
        if default.default is PydanticUndefined or default.default is Ellipsis:
            return _REQUIRED
        return default.default
    return default


def _is_list(annotation: Any) -> bool:
    """Whether a parameter declared ``annotation`` takes a list (``list[str]``)."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation is list or get_origin(annotation) is list


def _not_keyable(p: inspect.Parameter) -> str | None:
    """What FastAPI reads ``p`` from, when it is not the path or the query (a header, a
    cookie, a body, a dependency): a route's key could not hold it."""
    try:
        from fastapi import params
    except ImportError:  # pragma: no cover - Starlette without FastAPI: path and query only
        return None
    for marker in (p.default, *getattr(p.annotation, "__metadata__", ())):
        if isinstance(marker, params.Query | params.Path):
            continue
        if isinstance(marker, params.Param | params.Body | params.Depends):
            return type(marker).__name__
    annotation = p.annotation
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "body"
    return None


def cached_route(
    target: Keeper | View | ViewOf,
    *,
    principal: Callable[[Request], str | None] | None = None,
    not_found: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., Awaitable[Any]]], Endpoint]:
    """A decorator making an endpoint one served from a view; see :mod:`this module
    <freshkeep.integrations.routes>`.

    ``principal(request)`` gives the reader of a per-principal view. ``not_found``: a value
    ``None`` answers ``404`` with ``{"detail": not_found.format(**params)}`` (e.g. ``"topic
    {topic_id} does not exist"``), not ``null``. ``options`` go to :meth:`Keeper.cached
    <freshkeep.Keeper.cached>` when ``target`` is a keeper.

    The endpoint works in FastAPI (its signature declares the parameters, so they are
    validated and documented as usual) and as a Starlette ``Route`` endpoint (called with the
    request: its path and query parameters are validated by the declared annotations; an
    invalid one answers ``400``).
    """
    from freshkeep.keeper import Keeper

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Endpoint:
        signature = inspect.signature(fn, eval_str=True)
        params = dict(signature.parameters)
        view: View | ViewOf
        for name, p in params.items():
            where = _not_keyable(p)
            if where is not None:
                raise ConfigurationError(
                    f"{fn.__qualname__}: parameter {name!r} is read from a {where}, which a "
                    "cached route's key cannot hold (it is made from the path and the query): "
                    "declare it as a query or path parameter, or read the reader with "
                    "per_principal=True and principal="
                )
        if isinstance(target, Keeper):
            lists = frozenset(n for n, p in params.items() if _is_list(p.annotation))
            made: Cached[..., Any] = target.cached(**options)(_answers_errors(fn, lists))
            view = made.view
            if made.per_principal:
                params.pop("principal")
        else:
            if options:
                raise ConfigurationError(
                    f"cached_route({target!r}) takes no {', '.join(options)}: those are the "
                    "options of a view made from a keeper"
                )
            view = target
            made = None  # type: ignore[assignment]
        for name, p in params.items():
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise ConfigurationError(f"{fn.__qualname__}: a route cannot take *{name}")
            if p.annotation is Request or name == _REQUEST:
                raise ConfigurationError(
                    f"{fn.__qualname__}: a cached route declares its path and query "
                    "parameters only (the request is read by freshkeep)"
                )
        if isinstance(view, View) and view.per_principal and principal is None:
            raise ConfigurationError(
                f"view {view.name!r} is per-principal: give cached_route principal="
            )
        spec = RouteSpec(view, params, principal=principal, not_found=not_found, cached=made)

        async def endpoint(*args: Any, **kwargs: Any) -> Response:
            if args:  # a Starlette route: called with the request
                request = args[0]
                query = request.query_params
                raw = {**query, **request.path_params}
                for name in spec.lists:
                    if name in query:
                        raw[name] = query.getlist(name)
                try:
                    values = spec.parse(raw)
                except ValueError as exc:
                    return JSONResponse(
                        {"error": "bad-request", "param": str(exc), "detail": "missing or invalid"},
                        status_code=400,
                    )
            else:  # FastAPI: the declared parameters, validated, and the request
                request = kwargs.pop(_REQUEST)
                values = kwargs
            return await _answer(spec, request, values)

        request_param = inspect.Parameter(
            _REQUEST, inspect.Parameter.KEYWORD_ONLY, annotation=Request
        )
        endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*params.values(), request_param]
        )
        endpoint.__name__ = fn.__name__
        endpoint.__qualname__ = fn.__qualname__
        endpoint.__doc__ = fn.__doc__
        endpoint.__module__ = fn.__module__
        setattr(endpoint, _MARK, spec)
        endpoint.view = view  # type: ignore[attr-defined]
        endpoint.cached = made  # type: ignore[attr-defined]
        return endpoint

    return decorate


async def _answer(spec: RouteSpec, request: Request, values: Mapping[str, Any]) -> Response:
    view = spec.view(request)
    who = None
    if view.per_principal:
        who = spec.principal(request) if spec.principal is not None else None
        if who is None:
            return JSONResponse(
                {"error": "unauthorized", "detail": "this route answers each reader their own"},
                status_code=401,
                headers={"Cache-Control": "no-store"},
            )
    key = spec.key(values, who)
    response = await serve(request, view, key=key, principal=who)
    if response.status_code == 304 and request.headers.get("if-none-match", "").strip() == "*":
        # "*" matches any current representation: a value that does not exist has none.
        body = (await view.get(key, principal=who)).body
    elif response.status_code != 200:
        return response
    elif isinstance(response, EntryResponse):  # its start tells: a body in chunks stays so
        body = response.head(max(len(_ERROR_PREFIX), len(_NULL) + 1))
        if not body.startswith(_ERROR_PREFIX) and body != _NULL:
            return response
        body = response.body
    else:
        body = bytes(response.body)
    extra: dict[str, str] = {}
    if body.startswith(_ERROR_PREFIX):  # the builder raised an HTTPException: its answer
        error = orjson.loads(body)
        status, content = error[_ERROR], {"detail": error["detail"]}
        extra = error.get("headers") or {}
    elif spec.not_found is not None and body == _NULL:
        status, content = 404, {"detail": spec.not_found.format(**values)}
    else:
        return response
    # A value that does not exist is cached like any other, and answered as an error: to the
    # readers the value was answered to (a reader's own answer stays private, with its Vary).
    cache = view.keeper.settings.header_cache
    private = "private" in response.headers.get("cache-control", "")
    headers = {**extra, "Cache-Control": "private, no-cache" if private else "no-cache"}
    for name in (cache, "vary"):
        if name in response.headers:
            headers[name] = response.headers[name]
    return JSONResponse(content, status_code=status, headers=headers)


class _Fast:
    """A route :class:`HitFastPath` may answer: its spec and how its full path matches."""

    __slots__ = ("convertors", "exact", "path", "regex", "spec", "view")

    def __init__(self, path: str, spec: RouteSpec) -> None:
        self.path = path
        self.regex, _, self.convertors = compile_path(path)
        self.spec = spec
        self.view: View | None = None
        self.exact: tuple[bool, Hashable] = (False, None)
        """For a path without parameters: whether its key can be made, and the key."""
        if not self.convertors:
            try:
                self.exact = (True, spec.key(spec.parse({})))
            except ValueError:  # a required query parameter: never without a query string
                pass

    def key(self, path: str) -> tuple[bool, Hashable]:
        """Whether ``path`` is this route's, and its key (only path parameters: a request
        with a query string never takes the fast path)."""
        m = self.regex.match(path)
        if m is None:
            return False, None
        convertors = self.convertors
        raw = {
            k: convertors[k].convert(v) if k in convertors else v for k, v in m.groupdict().items()
        }
        try:
            return True, self.spec.key(self.spec.parse(raw))
        except ValueError:
            return False, None


def _cached_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, RouteSpec]]:
    """The full path and spec of each :func:`cached_route` route among ``routes`` and the
    routers they include, whose request no dependency handles (one may authenticate)."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # a router FastAPI includes as is
        if inner is not None:
            context = getattr(route, "include_context", None)
            if not getattr(context, "dependencies", None):
                yield from _cached_routes(inner.routes, prefix + getattr(context, "prefix", ""))
            continue
        spec = getattr(getattr(route, "endpoint", None), _MARK, None)
        if not isinstance(spec, RouteSpec) or not isinstance(route, Route):
            continue
        if route.methods is not None and "GET" not in route.methods:
            continue
        dependant = getattr(route, "dependant", None)
        if dependant is not None and dependant.dependencies:
            continue
        yield prefix + route.path, spec


class HitFastPath:
    """ASGI middleware answering a hit of a :func:`cached_route` route before the
    application's routing, dependency injection and inner middleware.

    It answers only a ``GET`` without a query string or the headers that change an answer
    (``Authorization``, ``If-None-Match``, ``Cache-Control``, ``Pragma``, the causal token;
    ``Cookie`` too unless the view is public without a shared cache: a cookie may carry a
    session, which ``serve()`` answers as credentials), to a route without dependencies,
    whose entry is a hit now (:meth:`View.current_hit`) under the key the route makes (its
    declared query parameters' defaults included), of a view that is not per-principal:
    with the very bytes and headers the route would answer. Everything else (a miss, a stale
    entry, a conditional request, a route whose dependencies may authenticate) falls through
    to the application. Add it last (outermost) to skip the most:
    ``app.add_middleware(HitFastPath)``.

    The routes are found at the first request, in the application's routes and the routers
    it includes (with their prefixes; not in mounted sub-applications, nor behind a router
    included with dependencies). A cached route's path must not be shadowed by a route
    matched before it: the fast path answers it as the cached route's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._exact: dict[str, _Fast] | None = None
        self._patterns: list[_Fast] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            exact = self._exact
            if exact is None:
                exact = self._discover(scope)
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            fast = exact.get(path)
            key: Hashable = None
            if fast is not None:
                found, key = fast.exact
                if not found:
                    fast = None
            elif self._patterns:
                for candidate in self._patterns:
                    found, key = candidate.key(path)
                    if found:
                        fast = candidate
                        break
            if fast is not None and await self._hit(fast, key, scope, send):
                return
        await self.app(scope, receive, send)

    async def _hit(self, fast: _Fast, key: Hashable, scope: Scope, send: Send) -> bool:
        view = fast.view
        if view is None:
            view = fast.view = fast.spec.view(Request(scope))
            if view.per_principal:
                return False
        special = _special_headers(view.keeper.settings)
        # a cookie may hold a session, which serve() answers as credentials: privately,
        # unless the value is public and no shared cache may store it
        cookies_ok = view.public and view.shared_cache is None
        for name, _ in scope["headers"]:
            if name in special or (name == b"cookie" and not cookies_ok):
                return False
        read = view.current_hit(key)
        if read is None:
            return False
        body = read.entry.joined
        if body is None:
            return False  # a body in chunks: the route sends them
        if body.startswith(_ERROR_PREFIX) or (fast.spec.not_found is not None and body == _NULL):
            return False  # the route answers an error
        await send(
            {"type": "http.response.start", "status": 200, "headers": _hit_headers(read, view)}
        )
        await send({"type": "http.response.body", "body": body})
        if tracing.on_read is not None:  # OpenTelemetry: the request span says the status
            tracing.on_read(view.name, "hit")
        return True

    def _discover(self, scope: Scope) -> dict[str, _Fast]:
        exact: dict[str, _Fast] = {}
        patterns: list[_Fast] = []
        # the application that routes (set by Starlette when the middleware is added to it),
        # else the one wrapped: HitFastPath(app)
        router = getattr(scope.get("app"), "router", None) or getattr(self.app, "router", None)
        for path, spec in _cached_routes(getattr(router, "routes", ())):
            fast = _Fast(path, spec)
            if fast.convertors:
                patterns.append(fast)
            else:
                exact.setdefault(path, fast)
        self._patterns = patterns
        self._exact = exact
        return exact
