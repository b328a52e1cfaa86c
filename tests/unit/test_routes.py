"""``cached_route`` and ``HitFastPath``: keys from declared parameters, the headers of
``serve()``, principals, and a hit answered ahead of FastAPI that nothing else may take."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Path
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from freshkeep import ConfigurationError, Keeper, Policy
from freshkeep.integrations.routes import HitFastPath, cached_route
from freshkeep.testing import FakeClock, MemoryRevisions


class Seen:
    """Inner middleware: the paths that reached the application behind the fast path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []
        SEEN.append(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


SEEN: list[Seen] = []


def make_app(keeper: Keeper, *, fast: bool = True) -> tuple[FastAPI, dict[str, list[Any]]]:
    built: dict[str, list[Any]] = {"item": [], "mine": [], "shared": []}
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cached_route(keeper, sources=["t:a"], public=True, not_found="item {item_id} is not here")
    async def item(
        item_id: Annotated[int, Path(ge=1, le=100)], limit: int = 10
    ) -> dict[str, Any] | None:
        """One item."""
        built["item"].append((item_id, limit))
        return None if item_id == 7 else {"id": item_id, "limit": limit}

    @app.get("/shared")
    @cached_route(keeper, sources=["t:a"], name="shared")
    async def shared() -> dict[str, int]:
        built["shared"].append(1)
        return {"n": len(built["shared"])}

    def reader(request: Request) -> str | None:
        return request.headers.get("x-user")

    @app.get("/mine")
    @cached_route(keeper, sources=["t:a"], per_principal=True, principal=reader)
    async def mine(principal: str) -> dict[str, str]:
        built["mine"].append(principal)
        return {"for": principal}

    async def guard() -> None:
        return None

    @app.get("/guarded", dependencies=[Depends(guard)])
    @cached_route(shared.view)  # type: ignore[attr-defined]
    async def guarded() -> None:
        """The shared view again, behind a dependency."""

    app.add_middleware(Seen)
    if fast:
        app.add_middleware(HitFastPath)
    return app, built


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper]]:
    keeper = Keeper(MemoryRevisions(), clock=FakeClock(), probe="interval")
    app, built = make_app(keeper)
    SEEN.clear()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await client.get("/shared")  # builds the middleware stack
        (seen,) = SEEN
        yield client, seen, built, keeper
    await keeper.aclose()


async def test_a_hit_is_answered_ahead_of_the_app_with_the_routes_bytes_and_headers(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
) -> None:
    client, seen, built, _ = served
    miss = await client.get("/items/3")
    await client.get("/items/3")  # the first hit confirms the entry for the hit path
    seen.paths.clear()
    hit = await client.get("/items/3")
    assert seen.paths == []  # answered by HitFastPath
    assert hit.status_code == 200 and hit.json() == {"id": 3, "limit": 10}
    assert hit.headers["x-freshkeep-cache"] == "hit" and miss.headers["x-freshkeep-cache"] == "miss"
    # the same answer as the route's own hit (an app without the fast path, same keeper)
    plain, _ = make_app(Keeper(MemoryRevisions(), clock=FakeClock(), probe="interval"), fast=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=plain), base_url="http://t"
    ) as c:
        await c.get("/items/3")
        await c.get("/items/3")
        routed = await c.get("/items/3")
    assert routed.content == hit.content
    assert sorted(routed.headers.items()) == sorted(hit.headers.items())
    assert built["item"] == [(3, 10)]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/items/3?limit=10", {}),  # a query string: the route reads it
        ("/items/3?refresh=true", {}),
        ("/items/3", {"if-none-match": "*"}),
        ("/items/3", {"cache-control": "no-cache"}),
        ("/items/3", {"authorization": "Bearer x"}),
        ("/items/3", {"x-freshkeep-min-revision": "t:a=0"}),
        ("/items/4", {}),  # a miss
        ("/items/0", {}),  # invalid: 422 from FastAPI
        ("/items/7", {}),  # null: the route answers 404
        ("/shared", {"cookie": "session=1"}),  # credentials to a view that is not public
        ("/guarded", {}),  # a dependency may authenticate
        ("/mine", {"x-user": "alice"}),  # per-principal: the route finds the reader
    ],
)
async def test_anything_but_a_plain_hit_falls_through_to_the_route(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
    path: str,
    headers: dict[str, str],
) -> None:
    client, seen, _, _ = served
    for warm in ("/items/3", "/items/7", "/shared", "/guarded"):
        await client.get(warm)
    await client.get("/mine", headers={"x-user": "alice"})
    await client.get(path, headers=headers)  # warm what can be warmed
    seen.paths.clear()
    await client.get(path, headers=headers)
    assert seen.paths == [path.split("?")[0]]
    seen.paths.clear()
    await client.post("/items/3")
    await client.head("/items/3")
    assert seen.paths == ["/items/3", "/items/3"]


async def test_a_stale_entry_falls_through_and_the_route_serves_it(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
) -> None:
    client, seen, _, keeper = served
    await client.get("/items/3")
    revisions = keeper.revisions
    assert isinstance(revisions, MemoryRevisions)
    revisions.revisions["t:a"] = 5  # written elsewhere: learned at the next resync
    await keeper.resync()
    seen.paths.clear()
    r = await client.get("/items/3")
    assert seen.paths == ["/items/3"] and r.headers["x-freshkeep-cache"] == "miss"


async def test_keys_come_from_declared_parameters_only(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
) -> None:
    client, _, built, _ = served
    for q in ("", "?limit=10", "?utm=1", "?limit=10&x=2&y=3"):
        r = await client.get(f"/items/3{q}")
        assert r.status_code == 200 and r.json() == {"id": 3, "limit": 10}
    assert (await client.get("/items/3?limit=5")).json() == {"id": 3, "limit": 5}
    assert built["item"] == [(3, 10), (3, 5)]
    r404 = await client.get("/items/7")
    assert r404.status_code == 404 and r404.json() == {"detail": "item 7 is not here"}
    assert (await client.get("/items/0")).status_code == 422


async def test_etag_and_304_as_serve(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
) -> None:
    client, _, _, _ = served
    first = await client.get("/items/3")
    again = await client.get("/items/3", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    assert (await client.get("/items/7", headers={"if-none-match": "*"})).status_code == 404


async def test_per_principal_entries_are_never_shared_and_need_a_reader(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
) -> None:
    client, _, built, _ = served
    a = await client.get("/mine", headers={"x-user": "alice"})
    b = await client.get("/mine", headers={"x-user": "bob"})
    a2 = await client.get("/mine", headers={"x-user": "alice"})
    assert a.json() == a2.json() == {"for": "alice"} and b.json() == {"for": "bob"}
    assert a2.headers["x-freshkeep-cache"] == "hit" and a.headers["etag"] != b.headers["etag"]
    assert a.headers["cache-control"] == "private, no-cache"
    assert built["mine"] == ["alice", "bob"]
    anonymous = await client.get("/mine")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"


async def test_credentials_to_a_shared_view_get_the_shared_value_marked_private(
    served: tuple[httpx.AsyncClient, Seen, dict[str, list[Any]], Keeper],
) -> None:
    client, _, built, _ = served
    anonymous = await client.get("/shared")
    signed_in = await client.get("/shared", headers={"authorization": "Bearer t"})
    assert signed_in.json() == anonymous.json() and built["shared"] == [1]
    assert signed_in.headers["cache-control"] == "private, no-cache"
    assert anonymous.headers["cache-control"] == "no-cache"


async def test_concurrent_misses_of_a_route_share_one_build() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")
    gate, started, calls = asyncio.Event(), asyncio.Event(), []
    app = FastAPI()
    app.add_middleware(HitFastPath)

    @app.get("/slow/{k}")
    @cached_route(keeper, sources=["t:a"], public=True)
    async def slow(k: int) -> int:
        calls.append(k)
        started.set()
        await gate.wait()
        return k

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        tasks = [asyncio.create_task(c.get("/slow/2")) for _ in range(30)]
        await started.wait()
        gate.set()
        answers = await asyncio.gather(*tasks)
        hits = await asyncio.gather(*(c.get("/slow/2") for _ in range(30)))
    assert calls == [2] and {r.json() for r in answers} == {2}
    assert {r.headers["x-freshkeep-cache"] for r in hits} == {"hit"}
    await keeper.aclose()


async def test_a_starlette_route_validates_its_parameters_by_their_annotations() -> None:
    keeper = Keeper(MemoryRevisions(), probe="interval")

    @cached_route(keeper, sources=["t:a"], public=True, policy=Policy.swr(30))
    async def page(n: int, size: int = 20) -> dict[str, int]:
        return {"n": n, "size": size}

    app = Starlette(routes=[Route("/pages/{n}", page)])
    app.add_middleware(HitFastPath)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        first = await c.get("/pages/2")
        hit = await c.get("/pages/2")
        sized = await c.get("/pages/2?size=5")
        bad = await c.get("/pages/x")
    assert first.json() == hit.json() == {"n": 2, "size": 20}
    assert hit.headers["x-freshkeep-cache"] == "hit" and sized.json() == {"n": 2, "size": 5}
    assert bad.status_code == 400 and bad.json()["param"] == "n"
    await keeper.aclose()


def test_misdeclared_routes_are_configuration_errors() -> None:
    keeper = Keeper(MemoryRevisions())
    view = keeper.view("v", lambda ctx: {}, sources=["t:a"], per_principal=True)

    async def declared() -> None:
        """Declares a route."""

    with pytest.raises(ConfigurationError, match="principal="):
        cached_route(view)(declared)
    with pytest.raises(ConfigurationError, match="takes no sources"):
        cached_route(view, sources=["t:a"])(declared)

    async def takes_request(request: Request) -> None:
        """Reads the request itself."""

    with pytest.raises(ConfigurationError, match="path and query parameters only"):
        cached_route(keeper, sources=["t:a"])(takes_request)


async def test_routes_of_included_routers_are_found_with_their_prefix() -> None:
    from fastapi import APIRouter

    keeper = Keeper(MemoryRevisions(), probe="interval")
    api, guarded = APIRouter(prefix="/v1"), APIRouter()

    @api.get("/things/{n}")
    @cached_route(keeper, sources=["t:a"], public=True)
    async def thing(n: int) -> dict[str, int]:
        return {"n": n}

    @guarded.get("/secret")
    @cached_route(thing.view)  # type: ignore[attr-defined]
    async def secret() -> None:
        """Behind the router's dependency."""

    async def guard() -> None:
        return None

    app = FastAPI()
    app.include_router(api, prefix="/api")
    app.include_router(guarded, dependencies=[Depends(guard)])
    app.add_middleware(Seen)
    app.add_middleware(HitFastPath)
    SEEN.clear()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for _ in range(2):
            await c.get("/api/v1/things/5")
            await c.get("/secret")
        (seen,) = SEEN
        seen.paths.clear()
        hit = await c.get("/api/v1/things/5")
        await c.get("/secret")
    assert hit.json() == {"n": 5} and hit.headers["x-freshkeep-cache"] == "hit"
    assert seen.paths == ["/secret"]
    await keeper.aclose()
