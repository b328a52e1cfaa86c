"""A body kept in chunks (after a delta returning :class:`Chunks`) is served as its chunks,
with the Content-Length of its bytes, and joined once for the hits that follow."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.routing import Route

from freshkeep import BuildContext, Chunks, Keeper, Section
from freshkeep.core.changes import Change
from freshkeep.core.entry import Body, body_bytes
from freshkeep.integrations.routes import cached_route
from freshkeep.integrations.starlette import endpoint
from freshkeep.testing import FakeClock

ROWS = "table:rows"


class Rows:
    """``{"rows": [...]}`` of the rows' ``n``, applied to its encoded value in chunks."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}

    async def build(self, ctx: BuildContext) -> dict[str, Any]:
        return {"rows": [self.rows[k] for k in sorted(self.rows)]}

    def apply(self, body: Body, changes: Sequence[Change]) -> Chunks:
        value = orjson.loads(body_bytes(body))
        value["rows"] = [self.rows[k] for k in sorted(self.rows)]
        items = [orjson.dumps(n) for n in value["rows"]]
        return Chunks([b'{"rows":[', *(b"," + x if i else x for i, x in enumerate(items)), b"]}"])


def make() -> tuple[Keeper, Any, Rows]:
    keeper = Keeper(clock=FakeClock())
    rows = Rows()

    async def other(ctx: BuildContext) -> dict[str, Any]:
        return {"other": True}

    view = keeper.view(
        "v",
        sections={
            "rows": Section(rows.build, [ROWS], apply=rows.apply, encoded=True),
            "other": Section(other, ["table:other"]),
        },
    )
    return keeper, view, rows


def commit(keeper: Keeper, rows: Rows, rev: int, rid: int, n: int) -> None:
    rows.rows[rid] = n
    change = Change(ROWS, "insert", None, {"id": rid, "n": n})
    keeper.changes.record({ROWS: rev}, [change], ())
    keeper.committed({ROWS: rev})


async def call(app: Any, path: str) -> tuple[dict[str, str], list[bytes]]:
    """The response's headers and its body messages."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t")],
        "server": ("t", 80),
        "client": ("c", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    bodies = [m["body"] for m in sent[1:] if m["type"] == "http.response.body"]
    assert all(m.get("more_body", False) for m in sent[1:-1]) and not sent[-1].get("more_body")
    return headers, bodies


async def check(app: Any, path: str, keeper: Keeper, view: Any, rows: Rows) -> None:
    await call(app, path)  # a miss, then a hit: one body message each
    commit(keeper, rows, 1, 1, 10)
    commit(keeper, rows, 2, 2, 20)
    headers, bodies = await call(app, path)
    expected = b'{"rows":[10,20],"other":true}'
    assert headers["x-freshkeep-cache"] == "section" and headers["x-freshkeep-reason"] == "delta"
    assert len(bodies) > 1 and b"".join(bodies) == expected
    assert headers["content-length"] == str(len(expected))
    assert all(type(b) is bytes for b in bodies)
    await asyncio.sleep(0)  # the join after the response
    entry = (await view.get()).entry
    assert entry.joined == expected
    headers, bodies = await call(app, path)
    assert headers["x-freshkeep-cache"] == "hit" and bodies == [expected]
    assert headers["content-length"] == str(len(expected))


async def test_a_body_in_chunks_is_sent_as_its_chunks_then_joined_for_hits() -> None:
    keeper, view, rows = make()
    await check(Starlette(routes=[Route("/v", endpoint(view))]), "/v", keeper, view, rows)


async def test_a_cached_route_sends_a_body_in_chunks_too() -> None:
    keeper, view, rows = make()

    @cached_route(view)
    async def route() -> None:
        """The view."""

    await check(Starlette(routes=[Route("/v", route)]), "/v", keeper, view, rows)


async def test_an_entry_response_runs_its_background_after_the_body() -> None:
    from starlette.background import BackgroundTask

    from freshkeep.core.entry import Entry, SectionEntry
    from freshkeep.integrations.starlette import EntryResponse

    ran: list[bool] = []
    for body in (Chunks([b'{"a":', b"1}"]), b'{"a":1}'):
        part = SectionEntry(body, (1,), 0.0, 0.0)
        entry = Entry("v", None, {"main": part}, {"main": ("table:a",)})
        response = EntryResponse(entry, [])
        response.background = BackgroundTask(ran.append, True)
        _, bodies = await call(response, "/")
        assert b"".join(bodies) == b'{"a":1}' and ran.pop() is True
