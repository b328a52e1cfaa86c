"""The hub's routes use async dependencies only: FastAPI runs a sync one in a worker thread
on every request, which the summary's hit path cannot afford."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.routing import APIRoute

from freshkeep.demo.app import create_app
from freshkeep.integrations.routes import HitFastPath


def _calls(dependant: Any) -> list[Any]:
    found = []
    for dep in dependant.dependencies:
        found.append(dep.call)
        found.extend(_calls(dep))
    return found


def _routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and inner is not route:
            found.extend(_routes(list(inner.routes)))
    return found


def test_every_dependency_of_every_route_is_async() -> None:
    app = create_app(":memory:")
    routes = _routes(list(app.routes))
    assert any(r.path == "/state/summary" for r in routes)
    calls = [(route.path, call) for route in routes for call in _calls(route.dependant)]
    assert calls  # the walk sees the dependencies
    sync = {
        f"{path}: {call.__qualname__}"
        for path, call in calls
        if not (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))
    }
    assert not sync, sorted(sync)


def test_the_cached_routes_are_answered_ahead_of_fastapi_and_documented_once() -> None:
    """A hit of GET /state/summary or /topics/{id}/summary is answered by the outermost
    middleware (HitFastPath), ahead of FastAPI's routing; the routes resolve no dependency
    (which would keep them off the fast path) and the OpenAPI schema lists each once."""
    app = create_app(":memory:")
    assert app.user_middleware[0].cls is HitFastPath
    cached = {r.path: r for r in _routes(list(app.routes)) if hasattr(r.endpoint, "view")}
    assert sorted(cached) == ["/state/summary", "/topics/{topic_id}/summary"]
    for route in cached.values():
        assert route.methods == {"GET"} and not route.dependant.dependencies
    schema = app.openapi()
    for path in cached:
        assert list(schema["paths"][path]) == ["get"]
        op = schema["paths"][path]["get"]
        assert "304" in op["responses"] and "200" in op["responses"]
    topic = schema["paths"]["/topics/{topic_id}/summary"]["get"]
    assert [p["name"] for p in topic["parameters"]] == ["topic_id"]
    assert {"404", "422"} <= set(topic["responses"])
