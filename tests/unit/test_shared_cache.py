"""Headers for shared caches: opt-in, bounded by the view's policy, only on current values."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from freshkeep import (
    BuildContext,
    ConfigurationError,
    Keeper,
    Policy,
    Section,
    SharedCache,
)
from freshkeep.integrations.starlette import endpoint
from freshkeep.testing import MemoryRevisions
from tests.docs_blocks import python_block, run_block

GRANT = SharedCache(s_maxage=10, stale_while_revalidate=20, stale_if_error=200)
DIRECTIVES = "public, max-age=0, s-maxage=10, stale-while-revalidate=20, stale-if-error=200"


class App:
    def __init__(self) -> None:
        self.revs = MemoryRevisions()
        self.keeper = Keeper(self.revs, probe="always")
        self.calls = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

        async def build(ctx: BuildContext) -> dict[str, Any]:
            if self.gate is not None:
                await self.gate.wait()
            self.calls += 1
            if self.fail:
                raise RuntimeError("builder broke")
            return {"n": self.calls}

        async def other(ctx: BuildContext) -> dict[str, Any]:
            return {"other": True}

        policy = Policy.swr(30, stale_if_error=300)
        self.edge = self.keeper.view(
            "edge", build, sources=["t:a"], public=True, policy=policy, shared_cache=GRANT
        )
        self.strict = self.keeper.view(
            "strict",
            build,
            sources=["t:a"],
            public=True,
            policy=Policy.strict(stale_if_error=60),
            shared_cache=SharedCache(stale_if_error=60),
        )
        self.sections = self.keeper.view(
            "sections",
            sections={
                "a": Section(build, ["t:a"], policy=Policy.strict(stale_if_error=100)),
                "b": Section(other, ["t:b"]),
            },
            public=True,
            policy=policy,
            shared_cache=SharedCache(stale_if_error=100),
        )
        self.plain = self.keeper.view("plain", build, sources=["t:a"], public=True)
        self.app = Starlette(
            routes=[
                Route(f"/{v.name}", endpoint(v))
                for v in (self.edge, self.strict, self.sections, self.plain)
            ]
        )


@pytest.fixture
async def hub() -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    a = App()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=a.app), base_url="http://t"
    ) as client:
        yield a, client


async def test_current_values_carry_the_directives(hub: tuple[App, httpx.AsyncClient]) -> None:
    _a, client = hub
    miss = await client.get("/edge")
    assert miss.headers["x-freshkeep-cache"] == "miss"
    assert miss.headers["cache-control"] == DIRECTIVES
    hit = await client.get("/edge")  # the fast path, from the pre-encoded headers
    assert hit.headers["x-freshkeep-cache"] == "hit"
    assert hit.headers["cache-control"] == DIRECTIVES
    assert hit.headers["etag"] == miss.headers["etag"]
    refreshed = await client.get("/edge?refresh=true")
    assert refreshed.headers["cache-control"] == DIRECTIVES


async def test_the_default_is_unchanged(hub: tuple[App, httpx.AsyncClient]) -> None:
    _a, client = hub
    for _ in range(2):
        r = await client.get("/plain")
        assert r.headers["cache-control"] == "no-cache"


async def test_a_304_revalidating_a_current_value_renews_the_grant(
    hub: tuple[App, httpx.AsyncClient],
) -> None:
    _a, client = hub
    etag = (await client.get("/edge")).headers["etag"]
    r = await client.get("/edge", headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.headers["cache-control"] == DIRECTIVES
    plain = (await client.get("/plain")).headers["etag"]
    r = await client.get("/plain", headers={"If-None-Match": plain})
    assert r.status_code == 304 and r.headers["cache-control"] == "no-cache"


async def test_a_stale_value_is_never_granted_to_a_shared_cache(
    hub: tuple[App, httpx.AsyncClient],
) -> None:
    a, client = hub
    first = await client.get("/edge")
    a.revs.revisions["t:a"] = 1
    a.gate = asyncio.Event()  # the background refresh waits until the end of the stale phase
    stale = await client.get("/edge")
    assert stale.headers["x-freshkeep-cache"] == "stale"
    assert stale.headers["cache-control"] == "no-cache"
    # A proxy revalidating its copy while the entry is stale: a 304, with no new grant.
    r = await client.get("/edge", headers={"If-None-Match": first.headers["etag"]})
    assert r.status_code == 304 and r.headers["cache-control"] == "no-cache"
    a.gate.set()
    await a.edge.wait_idle()
    fresh = await client.get("/edge")
    assert fresh.headers["x-freshkeep-cache"] == "hit" and fresh.json()["n"] == 2
    assert fresh.headers["cache-control"] == DIRECTIVES


async def test_an_error_stale_value_says_no_cache(hub: tuple[App, httpx.AsyncClient]) -> None:
    a, client = hub
    await client.get("/strict")
    a.fail = True
    a.revs.revisions["t:a"] = 1
    r = await client.get("/strict")
    assert r.headers["x-freshkeep-cache"] == "error-stale"
    assert r.headers["cache-control"] == "no-cache"
    a.fail = False
    r = await client.get("/strict")
    assert r.headers["x-freshkeep-cache"] == "miss"
    assert r.headers["cache-control"] == "public, max-age=0, s-maxage=0, stale-if-error=60"


async def test_a_section_rebuild_beside_stale_sections_says_no_cache(
    hub: tuple[App, httpx.AsyncClient],
) -> None:
    a, client = hub
    first = await client.get("/sections")
    assert first.headers["cache-control"] == "public, max-age=0, s-maxage=0, stale-if-error=100"
    a.revs.revisions["t:a"] = 1  # section "a" is strict: rebuilt in line
    a.revs.revisions["t:b"] = 1  # section "b" is swr: served stale, refreshed in the background
    r = await client.get("/sections")
    assert r.headers["x-freshkeep-cache"] == "section"
    assert r.headers["cache-control"] == "no-cache"


async def test_a_section_rebuild_of_a_strict_view_is_current() -> None:
    calls = 0

    async def part(ctx: BuildContext) -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {ctx.section: calls}

    revs = MemoryRevisions()
    keeper = Keeper(revs, probe="always")
    view = keeper.view(
        "strict",
        sections={"a": Section(part, ["t:a"]), "b": Section(part, ["t:b"])},
        public=True,
        policy=Policy.strict(stale_if_error=60),
        shared_cache=SharedCache(stale_if_error=60),
    )
    app = Starlette(routes=[Route("/strict", endpoint(view))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        await client.get("/strict")
        revs.revisions["t:a"] = 1
        r = await client.get("/strict")
    assert r.headers["x-freshkeep-cache"] == "section"
    assert r.headers["cache-control"] == "public, max-age=0, s-maxage=0, stale-if-error=60"


async def test_a_request_with_credentials_stays_private(
    hub: tuple[App, httpx.AsyncClient],
) -> None:
    _a, client = hub
    for headers in ({"Authorization": "Bearer x"}, {"Authorization": "Bearer x", "Pragma": "x"}):
        r = await client.get("/edge", headers=headers)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"
    r = await client.get(
        "/edge", headers={"Authorization": "Bearer x", "If-None-Match": r.headers["etag"]}
    )
    assert r.status_code == 304 and r.headers["cache-control"] == "private, no-cache"
    assert (await client.get("/edge")).headers["cache-control"] == DIRECTIVES


def _view(**kwargs: Any) -> None:
    async def build(ctx: BuildContext) -> dict[str, int]:
        return {}

    kwargs.setdefault("public", True)
    Keeper(MemoryRevisions()).view("v", build, sources=["t:a"], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"public": False}, "needs public=True"),
        ({"public": False, "per_principal": True}, "needs public=True"),
        ({"policy": Policy.strict()}, "exceeds the policy's max_stale"),
        ({"policy": Policy.swr(25)}, "exceeds the policy's max_stale"),
        ({"policy": Policy.swr(60, max_age=20)}, "exceeds the policy's max_age"),
        ({"policy": Policy.swr(60, stale_if_error=205)}, "exceeds the policy's stale_if_error"),
    ],
)
def test_directives_beyond_the_policy_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        _view(shared_cache=GRANT, **kwargs)


def test_a_section_policy_bounds_the_directives_too() -> None:
    async def build(ctx: BuildContext) -> dict[str, int]:
        return {}

    keeper = Keeper(MemoryRevisions())
    with pytest.raises(ConfigurationError, match="max_stale"):
        keeper.view(
            "v",
            sections={"a": Section(build, ["t:a"], policy=Policy.strict())},
            public=True,
            policy=Policy.swr(60),
            shared_cache=SharedCache(s_maxage=1),
        )


@pytest.mark.parametrize("value", [-1, 1.5, True, "10"])
def test_directives_are_whole_seconds(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="whole number"):
        SharedCache(s_maxage=value)
    with pytest.raises(ConfigurationError, match="must be a SharedCache"):
        _view(shared_cache={"s_maxage": 1}, policy=Policy.swr(60))


policies = st.builds(
    lambda mode, stale, on_error, max_age: (
        Policy.swr(stale, stale_if_error=on_error, max_age=max_age)
        if mode == "swr"
        else Policy.strict(stale_if_error=on_error, max_age=max_age)
    ),
    st.sampled_from(["swr", "strict"]),
    st.floats(min_value=0.001, max_value=1e6),
    st.floats(min_value=0, max_value=1e6),
    st.none() | st.floats(min_value=0.001, max_value=1e6),
)


@given(policies, st.floats(min_value=0.01, max_value=1))
def test_the_largest_grant_within_a_policy_is_accepted_by_it(policy: Policy, share: float) -> None:
    grant = SharedCache.within(policy, share=share)
    grant.check("v", [policy])
    cap = policy.max_stale if policy.max_age is None else min(policy.max_stale, policy.max_age)
    assert grant.s_maxage + grant.stale_while_revalidate <= cap
    if grant.stale_if_error:
        assert grant.s_maxage + grant.stale_if_error <= policy.stale_if_error


@given(
    policies,
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_a_grant_is_accepted_exactly_when_it_stays_within_the_policy(
    policy: Policy, s_maxage: int, swr: int, on_error: int
) -> None:
    grant = SharedCache(s_maxage, swr, on_error)
    cap = policy.max_stale if policy.max_age is None else min(policy.max_stale, policy.max_age)
    within = s_maxage + swr <= cap and (
        on_error == 0 or s_maxage + on_error <= policy.stale_if_error
    )
    try:
        grant.check("v", [policy])
    except ConfigurationError:
        assert not within
    else:
        assert within


async def test_the_docs_example_grants_what_the_page_says() -> None:
    found = await run_block(python_block("shared-caches.md", "shared-cache-view"), {})
    view = found["view"]
    app = Starlette(routes=[Route("/state/summary", endpoint(view))])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        r = await client.get("/state/summary")
    assert r.headers["cache-control"] == (
        "public, max-age=0, s-maxage=10, stale-while-revalidate=20, stale-if-error=300"
    )
    assert r.json() == {"open_tasks": 3}


@pytest.mark.parametrize(
    "policy",
    [Policy.swr(float("inf")), Policy.swr(30, stale_if_error=float("inf"))],
    ids=["max_stale", "stale_if_error"],
)
def test_the_grant_within_an_unbounded_policy_is_a_configuration_error(policy: Policy) -> None:
    with pytest.raises(ConfigurationError, match="no finite bound"):
        SharedCache.within(policy)
