"""``cached_route`` and ``HitFastPath``: which parameters make a route's key, on the route and
on the fast path alike (partitions, defaults, lists, headers, ``key=``), and Starlette's
validation of FastAPI ``Query()``/``Path()`` declarations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.routing import Route

from freshkeep import ConfigurationError, Keeper, Policy
from freshkeep.core.partitions import Partitioned
from freshkeep.core.shared_cache import SharedCache
from freshkeep.integrations.routes import HitFastPath, cached_route
from freshkeep.integrations.sqlalchemy import tracked_keeper
from freshkeep.sql import table_source
from freshkeep.testing import FakeClock, MemoryRevisions
from freshkeep.views import BuildContext


def make_keeper() -> Keeper:
    return Keeper(MemoryRevisions(), clock=FakeClock(), probe="interval")


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_a_route_of_path_and_query_parameters_follows_its_partition() -> None:
    keeper = make_keeper()
    tasks = Partitioned("table:tasks", "topic_id")
    db = {7: 1, 8: 1}
    app = FastAPI()

    @app.get("/topics/{topic_id}/summary")
    @cached_route(keeper, sources=[tasks])
    async def topic_summary(topic_id: int, recent: int = 5) -> dict[str, int]:
        return {"topic": topic_id, "tasks": db[topic_id]}

    async with client(app) as c:
        assert (await c.get("/topics/7/summary")).json() == {"topic": 7, "tasks": 1}
        await c.get("/topics/8/summary")
        db[7] = db[8] = 2
        await keeper.bump(tasks.source(7))
        assert (await c.get("/topics/7/summary")).json() == {"topic": 7, "tasks": 2}
        other = await c.get("/topics/8/summary")  # another partition: still a hit
        assert other.json() == {"topic": 8, "tasks": 1}


@pytest.mark.parametrize(
    "declared",
    [Header("public"), Cookie("none"), Depends(lambda: "x")],
    ids=["header", "cookie", "dependency"],
)
def test_a_parameter_not_from_the_path_or_query_is_refused(declared: Any) -> None:
    keeper = make_keeper()
    with pytest.raises(ConfigurationError, match=r"parameter 'x_tenant' is read from a"):

        @cached_route(keeper, sources=["t:a"])
        async def report(region: str, x_tenant: str = declared) -> dict[str, str]:
            return {"region": region, "tenant": x_tenant}


def test_an_annotated_header_parameter_is_refused() -> None:
    keeper = make_keeper()
    with pytest.raises(ConfigurationError, match=r"parameter 'x_tenant' is read from a Header"):

        @cached_route(keeper, sources=["t:a"])
        async def report(region: str, x_tenant: Annotated[str, Header()] = "public") -> str:
            return x_tenant


class Filter(BaseModel):
    region: str


def test_a_body_parameter_is_refused() -> None:
    keeper = make_keeper()
    with pytest.raises(ConfigurationError, match=r"parameter 'where' is read from a body"):

        @cached_route(keeper, sources=["t:a"])
        async def report(where: Filter) -> dict[str, str]:
            return {"region": where.region}


class Items:
    """A view read by other code under the key ``None`` and by a route with ``limit=10``."""

    def __init__(self, fast: bool) -> None:
        keeper = make_keeper()

        async def build(ctx: BuildContext) -> dict[str, Any]:
            return {"limit": ctx.key}

        self.view = keeper.view("items", build, sources=["t:a"])
        self.app = FastAPI()

        @self.app.get("/items")
        @cached_route(self.view)
        async def items(limit: int = 10) -> None: ...

        @self.app.get("/needs")
        @cached_route(self.view)
        async def needs(limit: int) -> None: ...

        if fast:
            self.app.add_middleware(HitFastPath)


@pytest.mark.parametrize("fast", [False, True], ids=["route", "fast-path"])
async def test_a_path_without_parameters_is_keyed_by_its_query_defaults(fast: bool) -> None:
    items = Items(fast)
    async with client(items.app) as c:
        await items.view.get()  # the view's unkeyed entry, read by other code, is a hit
        await items.view.get()
        answers = [(await c.get("/items")).json() for _ in range(3)]
        assert answers == [{"limit": 10}] * 3
        assert (await c.get("/needs")).status_code == 422  # required: never the fast path's


def session_app(fast: bool) -> FastAPI:
    keeper = make_keeper()

    async def build(ctx: BuildContext) -> dict[str, int]:
        return {"n": 1}

    view = keeper.view(
        "pub",
        build,
        sources=["t:a"],
        public=True,
        policy=Policy.swr(30),
        shared_cache=SharedCache(s_maxage=10),
    )
    app = FastAPI()

    @app.get("/pub")
    @cached_route(view)
    async def pub() -> None: ...

    @app.get("/login")
    async def login(request: Request) -> dict[str, str]:
        request.session["user"] = "alice"
        return {"ok": "yes"}

    app.add_middleware(SessionMiddleware, secret_key="k" * 32)
    if fast:
        app.add_middleware(HitFastPath)
    return app


@pytest.mark.parametrize("fast", [False, True], ids=["route", "fast-path"])
async def test_a_request_with_a_session_is_answered_privately(fast: bool) -> None:
    async with client(session_app(fast)) as c:
        await c.get("/pub")  # a miss: the entry is built
        anonymous = await c.get("/pub")
        await c.get("/login")  # the client now holds a session cookie
        answers = [(await c.get("/pub")).headers.get("cache-control") for _ in range(2)]
    assert "s-maxage=10" in anonymous.headers["cache-control"]
    assert answers == ["private, no-cache"] * 2


async def test_a_route_with_its_own_key_function_answers() -> None:
    keeper = make_keeper()
    app = FastAPI()

    @app.get("/items/{item_id}")
    @cached_route(keeper, sources=["t:items"], key=lambda item_id, page=1: item_id)
    async def item(item_id: int, page: int = 1) -> dict[str, int]:
        return {"item": item_id, "page": page}

    async with client(app) as c:
        r = await c.get("/items/3")
        assert r.status_code == 200, r.text
        assert r.json() == {"item": 3, "page": 1}
        again = await c.get("/items/3?page=2")  # the same key: the entry of page 1
        assert again.headers["x-freshkeep-cache"] == "hit"
        assert again.json() == {"item": 3, "page": 1}


async def test_a_list_query_parameter_is_keyed_in_its_order() -> None:
    keeper = make_keeper()
    app = FastAPI()
    built: list[Any] = []

    @app.get("/search")
    @cached_route(keeper, sources=["t:a"])
    async def search(tags: list[str] = Query([])) -> dict[str, list[str]]:  # noqa: B008
        built.append(tags)
        return {"tags": tags}

    async with client(app) as c:
        r = await c.get("/search?tags=a&tags=b")
        assert r.status_code == 200, r.text
        assert r.json() == {"tags": ["a", "b"]}
        assert (await c.get("/search?tags=a&tags=b")).headers["x-freshkeep-cache"] == "hit"
        assert (await c.get("/search?tags=b&tags=a")).json() == {"tags": ["b", "a"]}
        assert (await c.get("/search")).json() == {"tags": []}
    assert built == [["a", "b"], ["b", "a"], []]  # given as lists, as declared


async def test_a_cached_http_exception_keeps_its_headers() -> None:
    keeper = make_keeper()
    app = FastAPI()

    @app.get("/limited/{n}")
    @cached_route(keeper, sources=["t:a"])
    async def limited(n: int) -> dict[str, int]:
        raise HTTPException(429, "slow down", headers={"Retry-After": "30"})

    async with client(app) as c:
        for _ in range(2):  # built, then answered from the entry
            r = await c.get("/limited/1")
            assert r.status_code == 429
            assert r.headers.get("retry-after") == "30"
            assert r.json() == {"detail": "slow down"}


async def test_a_readers_error_answer_is_private() -> None:
    keeper = make_keeper()
    app = FastAPI()

    def reader(request: Request) -> str | None:
        return request.headers.get("x-user")

    @app.get("/projects/{pid}")
    @cached_route(keeper, sources=["t:a"], per_principal=True, principal=reader)
    async def project(pid: int, principal: str) -> dict[str, object]:
        if principal != "alice":
            raise HTTPException(403, f"{principal} may not read project {pid}")
        return {"pid": pid}

    async with client(app) as c:
        ok = await c.get("/projects/1", headers={"X-User": "alice"})
        denied = await c.get("/projects/1", headers={"X-User": "bob"})
    assert ok.status_code == 200 and "private" in ok.headers["cache-control"]
    assert denied.status_code == 403
    assert denied.headers["cache-control"] == "private, no-cache"
    assert denied.headers["vary"] == ok.headers["vary"]


def query_app(seen: list[object]) -> Starlette:
    keeper = make_keeper()

    @cached_route(keeper, sources=["t:a"])
    async def search(q: int = Query(ge=1), page: int = Query(1, le=9)) -> dict[str, int]:
        seen.append(q)
        return {"q": q, "page": page}

    return Starlette(routes=[Route("/search", search)])


@pytest.mark.parametrize(("query", "param"), [("", "q"), ("?q=0", "q"), ("?q=1&page=10", "page")])
async def test_a_starlette_route_checks_fastapi_query_declarations(query: str, param: str) -> None:
    seen: list[object] = []
    async with client(query_app(seen)) as c:
        r = await c.get("/search" + query)
        assert r.status_code == 400, r.text
        assert r.json()["param"] == param
        assert (await c.get("/search?q=2")).json() == {"q": 2, "page": 1}
    assert seen == [2]


class Base(DeclarativeBase):
    pass


class Topic(Base):
    __tablename__ = "topics"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    topic_id: Mapped[int] = mapped_column(ForeignKey("topics.id"))


async def test_the_guides_topic_summary_404_ends_with_the_topics_creation(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    Session = async_sessionmaker(engine, expire_on_commit=False)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    keeper = tracked_keeper(Session)
    await keeper.revisions.create_table()
    app = FastAPI()

    @app.get("/topics/{topic_id}/summary")  # as in docs/user-guide.md
    @cached_route(keeper, sources=[table_source(Topic), table_source(Task, by="topic_id")])
    async def topic_summary(topic_id: int, recent: int = 5) -> dict[str, Any]:
        async with Session() as s:
            topic = await s.get(Topic, topic_id)
            if topic is None:
                raise HTTPException(404, f"topic {topic_id} does not exist")
            return {"topic": topic.name}

    try:
        async with client(app) as c:
            assert (await c.get("/topics/1/summary")).status_code == 404
            assert (await c.get("/topics/1/summary")).status_code == 404  # cached
            async with Session() as s:
                s.add(Topic(id=1, name="one"))
                await s.commit()
            r = await c.get("/topics/1/summary")
            assert r.status_code == 200, r.text
            assert r.json() == {"topic": "one"}
    finally:
        await engine.dispose()
