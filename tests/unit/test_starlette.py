"""Serving a view over HTTP: headers, conditional requests, refresh, errors, principals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshkeep import BuildContext, Keeper, Policy, Settings
from freshkeep.integrations.starlette import cache_status, endpoint, etag_matches, serve
from freshkeep.testing import MemoryRevisions


class App:
    def __init__(self, policy: Policy | None = None, **settings: Any) -> None:
        self.revs = MemoryRevisions()
        self.keeper = Keeper(
            self.revs,
            probe="always",
            settings=Settings(**settings),
            policy=policy or Policy.strict(),
        )
        self.calls = 0
        self.fail = False

        async def build(ctx: BuildContext) -> dict[str, Any]:
            self.calls += 1
            if self.fail:
                raise RuntimeError("builder broke")
            return {"n": self.calls, "who": ctx.principal}

        self.shared = self.keeper.view("shared", build, sources=["t:a"])
        self.public = self.keeper.view("public", build, sources=["t:a"], public=True)
        self.mine = self.keeper.view("mine", build, sources=["t:a"], per_principal=True)

        async def mine(request: Request) -> Response:
            return await serve(request, self.mine, principal=request.headers.get("x-user"))

        self.app = Starlette(
            routes=[
                Route("/shared", endpoint(self.shared)),
                Route("/public", endpoint(self.public)),
                Route("/mine", mine),
            ]
        )


@pytest.fixture
async def hub() -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    a = App()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=a.app), base_url="http://t"
    ) as client:
        yield a, client


async def test_miss_then_hit_with_headers(hub: tuple[App, httpx.AsyncClient]) -> None:
    a, client = hub
    r1 = await client.get("/shared")
    assert r1.status_code == 200 and r1.json() == {"n": 1, "who": None}
    assert r1.headers["x-freshkeep-cache"] == "miss"
    assert r1.headers["x-freshkeep-revision"] == "t:a=0"
    assert r1.headers["cache-status"] == "freshkeep; fwd=miss; stored"
    assert r1.headers["cache-control"] == "no-cache"
    r2 = await client.get("/shared")
    assert r2.headers["x-freshkeep-cache"] == "hit" and r2.headers["etag"] == r1.headers["etag"]
    assert r2.headers["cache-status"] == "freshkeep; hit" and a.calls == 1


async def test_conditional_request_is_304_without_building(
    hub: tuple[App, httpx.AsyncClient],
) -> None:
    a, client = hub
    etag = (await client.get("/shared")).headers["etag"]
    await a.keeper.bump("t:a")  # the entry is now outdated, but the client's ETag is not current
    r = await client.get("/shared", headers={"If-None-Match": etag})
    assert r.status_code == 200 and a.calls == 2
    current = r.headers["etag"]
    r304 = await client.get("/shared", headers={"If-None-Match": f'"x", {current}'})
    assert r304.status_code == 304 and r304.content == b"" and r304.headers["etag"] == current
    a.revs.revisions["t:a"] = 5  # changed elsewhere: the ETag is computed, nothing is built
    fresh_etag = await a.shared.current_etag()
    r304 = await client.get("/shared", headers={"If-None-Match": fresh_etag})
    assert r304.status_code == 304 and a.calls == 2


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/shared?refresh=true", {}), ("/shared", {"Cache-Control": "no-cache"})],
)
async def test_refresh_forces_a_stored_rebuild(
    hub: tuple[App, httpx.AsyncClient], path: str, headers: dict[str, str]
) -> None:
    _a, client = hub
    await client.get("/shared")
    r = await client.get(path, headers=headers)
    assert r.headers["x-freshkeep-cache"] == "miss" and r.json()["n"] == 2
    assert r.headers["cache-status"] == "freshkeep; fwd=request; stored"
    assert (await client.get("/shared")).headers["x-freshkeep-cache"] == "hit"


async def test_no_servable_value_is_a_503_with_json(
    hub: tuple[App, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    a, client = hub
    a.fail = True
    r = await client.get("/shared")
    assert r.status_code == 503
    body = r.json()
    assert body["error"] == "unavailable" and body["view"] == "shared"
    # The error stays in the log, under the id the body gives; the body never carries it.
    assert "builder broke" not in r.text
    error_id = body["error_id"]
    assert any(error_id in m and "builder broke" in m for m in caplog.messages)


async def test_authenticated_request_to_a_shared_view_gets_everyones_value_privately(
    hub: tuple[App, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    a, client = hub
    anonymous = await client.get("/shared")
    for _ in range(2):
        r = await client.get("/shared", headers={"Authorization": "Bearer x"})
        assert r.status_code == 200 and r.json() == anonymous.json()  # never a 500
        assert r.headers["cache-control"] == "private, no-cache"
        assert r.json()["who"] is None  # the builder never saw a principal
    etag = r.headers["etag"]
    not_modified = await client.get(
        "/shared", headers={"Authorization": "Bearer x", "If-None-Match": etag}
    )
    assert not_modified.status_code == 304
    assert not_modified.headers["cache-control"] == "private, no-cache"
    assert a.calls == 1
    assert sum("is shared" in rec.message for rec in caplog.records) == 1  # logged once
    r = await client.get("/public", headers={"Authorization": "Bearer x"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"


async def test_per_principal_views_are_private(hub: tuple[App, httpx.AsyncClient]) -> None:
    _a, client = hub
    alice = await client.get("/mine", headers={"x-user": "alice", "Authorization": "a"})
    bob = await client.get("/mine", headers={"x-user": "bob", "Authorization": "b"})
    assert alice.json()["who"] == "alice" and bob.json()["who"] == "bob"
    assert alice.headers["cache-control"] == "private, no-cache"
    assert alice.headers["etag"] != bob.headers["etag"]


async def test_header_names_come_from_settings() -> None:
    a = App(header_cache="X-Cache", header_revision="X-Rev", cache_status_name="edge")
    transport = httpx.ASGITransport(app=a.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/shared")
    assert r.headers["x-cache"] == "miss" and r.headers["x-rev"] == "t:a=0"
    assert r.headers["cache-status"].startswith("edge; ")


def test_etag_matching_is_weak() -> None:
    assert etag_matches('"abc"', 'W/"abc"')
    assert etag_matches('W/"x", W/"abc"', 'W/"abc"')
    assert etag_matches("*", 'W/"abc"')
    assert not etag_matches('W/"abd"', 'W/"abc"')


async def test_cache_status_of_every_status() -> None:
    a = App()
    read = await a.shared.get()
    read.status = "section"
    assert cache_status(read, "fk") == "fk; fwd=partial; stored"
    read.status, read.collapsed = "stale", True
    expected = "fk; hit; fwd=stale; detail=stale-while-revalidate; collapsed"
    assert cache_status(read, "fk") == expected
    read.status, read.collapsed = "error-stale", False
    assert cache_status(read, "fk") == "fk; hit; fwd=stale; detail=stale-if-error"


async def test_conditional_request_during_an_outage_serves_error_stale() -> None:
    a = App(Policy.strict(stale_if_error=60))
    transport = httpx.ASGITransport(app=a.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        first = await c.get("/public")
        a.revs.fail = ConnectionError("db down")
        r = await c.get("/public", headers={"If-None-Match": '"other"'})
        assert r.status_code == 200 and r.headers["x-freshkeep-cache"] == "error-stale"
        assert r.content == first.content
        r = await c.get("/public", headers={"If-None-Match": first.headers["etag"]})
        assert r.status_code == 304  # the client already holds what would be served


async def test_an_empty_session_is_anonymous() -> None:
    a = App()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["session"] = {}
        await a.app(scope, receive, send)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/shared")).status_code == 200


async def test_the_fast_path_answers_like_the_full_one(hub: tuple[App, httpx.AsyncClient]) -> None:
    _a, client = hub
    await client.get("/public")
    fast = await client.get("/public")  # no query, no special header: the pre-encoded hit
    full = await client.get("/public", headers={"Pragma": "x"})  # the full path
    for r in (fast, full):
        assert r.headers["x-freshkeep-cache"] == "hit" and r.status_code == 200
    keys = ("etag", "cache-control", "x-freshkeep-revision", "cache-status", "content-type")
    assert {k: fast.headers[k] for k in keys} == {k: full.headers[k] for k in keys}
    assert fast.headers["content-length"] == str(len(fast.content))
    assert fast.content == full.content


async def test_a_build_started_by_an_authenticated_read_sees_no_context_of_the_request() -> None:
    import contextvars

    user: contextvars.ContextVar[str | None] = contextvars.ContextVar("user", default=None)
    keeper = Keeper(MemoryRevisions(), probe="always")

    async def build(ctx: BuildContext) -> dict[str, Any]:
        return {"user": user.get()}  # a builder that (wrongly) reads a request's context

    view = keeper.view("shared", build, sources=["t:a"])

    async def route(request: Request) -> Response:
        user.set(request.headers.get("x-user"))  # as an authentication middleware would
        return await serve(request, view)

    app = Starlette(routes=[Route("/shared", route)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.get("/shared", headers={"Authorization": "Bearer a", "x-user": "alice"})
        assert r.json() == {"user": None}  # alice's context never reached the shared entry
        r = await client.get("/shared")
        assert r.json() == {"user": None}


async def test_the_status_header_says_the_labels_an_application_maps() -> None:
    a = App(status_labels={"hit": "hit-revision", "miss": "miss"})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=a.app), base_url="http://t"
    ) as client:
        r1 = await client.get("/shared")
        r2 = await client.get("/shared")
        r3 = await client.get("/shared?refresh=true")
    assert r1.headers["x-freshkeep-cache"] == "miss"
    assert r2.headers["x-freshkeep-cache"] == "hit-revision"
    assert r2.headers["cache-status"] == "freshkeep; hit"  # RFC 9211 keeps its own words
    assert r3.headers["x-freshkeep-cache"] == "miss"
