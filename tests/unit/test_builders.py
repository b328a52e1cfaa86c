"""Builders are checked when the view is defined; what FastAPI users return is encoded."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading

import httpx
import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, RootModel

from freshkeep import BuildContext, ConfigurationError, Keeper, Section
from freshkeep.testing import MemoryRevisions


class Totals(BaseModel):
    tasks: int
    names: list[str]


@dataclasses.dataclass
class Point:
    x: int
    y: int


async def test_a_plain_function_runs_in_a_worker_thread() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def build(ctx: BuildContext) -> dict[str, int]:
        seen.append(threading.get_ident())
        return {"n": 1}

    keeper = Keeper(MemoryRevisions())
    view = keeper.view("sync", build, sources=["t:a"])
    read = await view.get()
    assert read.value == {"n": 1} and seen and seen[0] != loop_thread


async def test_a_function_returning_a_coroutine_is_awaited() -> None:
    async def fetch() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"n": 2}

    keeper = Keeper(MemoryRevisions())
    view = keeper.view("lambda", lambda ctx: fetch(), sources=["t:a"])
    assert (await view.get()).value == {"n": 2}


def test_something_not_callable_is_refused_at_definition() -> None:
    keeper = Keeper(MemoryRevisions())
    with pytest.raises(ConfigurationError, match="builder must be an async function"):
        keeper.view("bad", {"n": 1}, sources=["t:a"])  # type: ignore[arg-type]


async def test_pydantic_models_and_dataclasses_are_encoded() -> None:
    async def model(ctx: BuildContext) -> Totals:
        return Totals(tasks=3, names=["a", "b"])

    async def point(ctx: BuildContext) -> Point:
        return Point(1, 2)

    async def nested(ctx: BuildContext) -> dict[str, object]:
        return {"totals": Totals(tasks=1, names=[])}

    keeper = Keeper(MemoryRevisions())
    one = keeper.view("model", model, sources=["t:a"])
    assert (await one.get()).value == {"tasks": 3, "names": ["a", "b"]}
    merged = keeper.view(
        "sections",
        sections={"m": Section(model, ["t:a"]), "p": Section(point, ["t:b"])},
    )
    assert (await merged.get()).value == {"tasks": 3, "names": ["a", "b"], "x": 1, "y": 2}
    inner = keeper.view("nested", nested, sources=["t:a"])
    assert (await inner.get()).value == {"totals": {"tasks": 1, "names": []}}


async def test_a_lambda_returning_a_future_runs_on_the_loop() -> None:
    async def part(n: int) -> int:
        return n

    async def gathered(ctx: BuildContext) -> dict[str, list[int]]:
        return {"n": await asyncio.gather(part(1), part(2))}

    keeper = Keeper(MemoryRevisions())
    view = keeper.view("gather", lambda ctx: asyncio.ensure_future(gathered(ctx)), sources=["t:a"])
    assert (await view.get()).value == {"n": [1, 2]}


class Named(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    open_tasks: int = Field(alias="openTasks")
    when: datetime.datetime
    tags: set[str] = set()


async def test_the_response_of_a_view_built_from_a_model_is_the_models_json() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    from freshkeep.integrations.starlette import endpoint

    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    named = Named(open_tasks=2, when=when, tags={"x"})
    rows = [Totals(tasks=1, names=["a"]), Totals(tasks=2, names=[])]

    async def one(ctx: BuildContext) -> Named:
        return named

    async def listed(ctx: BuildContext) -> list[Totals]:
        return rows

    async def root(ctx: BuildContext) -> RootModel[dict[str, int]]:
        return RootModel[dict[str, int]]({"root": 1})

    keeper = Keeper(MemoryRevisions())
    views = [
        keeper.view("one", one, sources=["t:a"]),
        keeper.view("listed", listed, sources=["t:a"]),
        keeper.view("merged", sections={"n": Section(one, ["t:a"]), "r": Section(root, ["t:b"])}),
    ]
    app = Starlette(routes=[Route(f"/{v.name}", endpoint(v)) for v in views])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        for _ in range(2):  # the miss, then the hit from the stored bytes
            r = await client.get("/one")
            assert r.headers["content-type"] == "application/json"
            assert r.json() == orjson.loads(named.model_dump_json())
            assert r.json()["openTasks"] == 2  # the model's own serialisation settings
            r = await client.get("/listed")
            assert r.json() == [orjson.loads(m.model_dump_json()) for m in rows]
            r = await client.get("/merged")
            assert r.json() == {**orjson.loads(named.model_dump_json()), "root": 1}
