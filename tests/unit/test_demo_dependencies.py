"""The hub's routes use async dependencies only: FastAPI runs a sync one in a worker thread
on every request, which the summary's hit path cannot afford."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.routing import APIRoute

from freshkeep.demo.app import create_app


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


def test_the_summary_route_is_matched_first_and_documented_once() -> None:
    """GET /state/summary is served from the application itself, ahead of the routers it
    includes (FastAPI walks an included router on every request), with no dependency to
    resolve; the OpenAPI schema still lists it once."""
    app = create_app(":memory:")
    top = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert [r.path for r in top] == ["/state/summary"]
    (route,) = top
    assert route.methods == {"GET"} and not route.dependant.dependencies
    assert not route.include_in_schema
    schema = app.openapi()
    assert list(schema["paths"]["/state/summary"]) == ["get"]
    op = schema["paths"]["/state/summary"]["get"]
    assert op["tags"] == ["state"] and "304" in op["responses"]
    documented = [r for r in _routes(list(app.routes)) if r.path == "/state/summary"]
    assert [r.include_in_schema for r in documented] == [False, True]
    assert documented[0].endpoint is documented[1].endpoint
