"""The age cap (``max_age``) and per-section policies, on views and over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from freshkeep import BuildContext, ConfigurationError, Keeper, Policy, Section
from freshkeep.integrations.starlette import serve
from freshkeep.testing import FakeClock, MemoryRevisions


class Counter:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return {self.name: self.calls}


async def test_strict_max_age_rebuilds_in_line_when_nothing_changed() -> None:
    clock = FakeClock()
    keeper = Keeper(MemoryRevisions(), clock=clock, probe="interval")
    build = Counter("n")
    view = keeper.view("v", build, sources=["t:a"], policy=Policy.strict(max_age=300))
    assert (await view.get()).status == "miss"
    clock.advance(299)
    assert (await view.get()).status == "hit"
    clock.advance(2)  # 301 s after the build, no revision moved
    read = await view.get()
    assert (read.status, read.reason, read.value) == ("miss", "expired", {"n": 2})
    assert (await view.get()).status == "hit"


async def test_swr_max_age_serves_stale_with_the_reason_and_refreshes_once() -> None:
    clock = FakeClock()
    keeper = Keeper(MemoryRevisions(), clock=clock, probe="interval")
    build = Counter("n")
    view = keeper.view("v", build, sources=["t:a"], policy=Policy.swr(30, max_age=300))
    await view.get()
    for _ in range(15):  # a read every 20 s keeps confirming the entry: it is current...
        clock.advance(20)
        assert (await view.get()).status == "hit"
    clock.advance(1)  # ...but 301 s old
    build.gate = asyncio.Event()
    reads = await asyncio.gather(*(view.get() for _ in range(10)))
    assert {(r.status, r.reason) for r in reads} == {("stale", "expired")}
    build.gate.set()
    await keeper.wait_idle()
    assert build.calls == 2
    fresh = await view.get()
    assert (fresh.status, fresh.value) == ("hit", {"n": 2})


async def test_a_keeper_without_revision_source_still_expires() -> None:
    clock = FakeClock()
    keeper = Keeper(clock=clock)
    view = keeper.view("v", Counter("n"), sources=["key:x"], policy=Policy.strict(max_age=10))
    await view.get()
    assert (await view.get()).status == "hit"
    clock.advance(11)
    assert (await view.get()).reason == "expired"


async def test_a_strict_section_is_rebuilt_in_line_under_an_swr_view() -> None:
    clock = FakeClock()
    revs = MemoryRevisions()
    keeper = Keeper(revs, clock=clock, probe="always")
    core, tail = Counter("core"), Counter("tail")
    view = keeper.view(
        "summary",
        sections={
            "core": Section(core, ["t:core"]),
            "tail": Section(tail, ["t:tail"], policy=Policy.strict()),
        },
        policy=Policy.swr(30),
    )
    await view.get()
    revs.revisions["t:core"] = 1  # another process wrote: core may be served stale
    revs.revisions["t:tail"] = 1
    core.gate = asyncio.Event()
    read = await view.get()
    assert read.status == "section"
    assert read.value == {"core": 1, "tail": 2}  # the tail is new, the core still the old one
    assert tail.calls == 2
    core.gate.set()
    await keeper.wait_idle()
    assert core.calls == 2 and view.stats.background_refreshes == 1
    assert (await view.get()).value == {"core": 2, "tail": 2}
    revs.revisions["t:core"] = 2  # only the swr section changed: served stale
    core.gate = None
    assert (await view.get()).status == "stale"


def test_a_section_policy_must_be_a_policy() -> None:
    try:
        Section(Counter("x"), ["t:a"], policy="strict")  # type: ignore[arg-type]
    except ConfigurationError as exc:
        assert "Policy" in str(exc)
    else:
        raise AssertionError("accepted a string as a policy")


async def test_http_headers_say_expired() -> None:
    clock = FakeClock()
    keeper = Keeper(MemoryRevisions(), clock=clock, probe="interval")
    view = keeper.view("v", Counter("n"), sources=["t:a"], policy=Policy.swr(30, max_age=60))

    async def route(request: Request) -> Response:
        return await serve(request, view)

    app = Starlette(routes=[Route("/v", route)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        first = await client.get("/v")
        assert "x-freshkeep-reason" not in first.headers
        for _ in range(3):
            clock.advance(20)
            assert (await client.get("/v")).headers["x-freshkeep-cache"] == "hit"
        clock.advance(1)
        stale = await client.get("/v")
        assert stale.headers["x-freshkeep-cache"] == "stale"
        assert stale.headers["x-freshkeep-reason"] == "expired"
        assert stale.headers["cache-status"] == "freshkeep; hit; fwd=stale; detail=expired"
        await keeper.wait_idle()
        hit = await client.get("/v")
        assert hit.headers["x-freshkeep-cache"] == "hit"
        assert "x-freshkeep-reason" not in hit.headers
