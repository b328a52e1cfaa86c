"""Builders are checked when the view is defined; what FastAPI users return is encoded."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest
from pydantic import BaseModel

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
