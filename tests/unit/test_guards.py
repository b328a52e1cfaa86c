"""The ASGI guards: a body over its limit is 413 (up front, or as its chunks arrive), an
unexpected exception is a 500 whose body carries only an error id."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message

from freshkeep.integrations.guards import BodyLimit, InternalErrors, RequestTooLarge
from tests.docs_blocks import python_block, run_block

SECRET = "SELECT token FROM users WHERE path = '/srv/app/secret.py'"


async def echo(request: Request) -> Response:
    return JSONResponse({"size": len(await request.body())})


async def forgiving(request: Request) -> Response:
    try:
        await request.body()
    except RequestTooLarge:
        return JSONResponse({"detail": "the body could not be read"}, status_code=400)
    return JSONResponse({})


async def boom(request: Request) -> Response:
    raise RuntimeError(SECRET)


async def late_boom(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        raise RuntimeError(SECRET)

    return StreamingResponse(chunks(), media_type="application/json")


def make_app(**limits: Any) -> ASGIApp:
    app = Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/uploads/echo", echo, methods=["POST"]),
            Route("/forgiving", forgiving, methods=["POST"]),
            Route("/boom", boom),
            Route("/late", late_boom),
        ]
    )
    app.add_middleware(BodyLimit, max_bytes=100, paths={"/uploads/": 1000}, **limits)
    app.add_middleware(InternalErrors)
    return app


def client(app: ASGIApp, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def chunked(size: int, step: int = 10) -> AsyncIterator[bytes]:
    for _ in range(0, size, step):
        yield b"x" * step


async def test_a_body_within_the_limit_passes() -> None:
    async with client(make_app()) as http:
        assert (await http.post("/echo", content=b"x" * 100)).json() == {"size": 100}
        assert (await http.post("/echo", content=chunked(100))).json() == {"size": 100}
        assert (await http.post("/uploads/echo", content=b"x" * 1000)).json() == {"size": 1000}


@pytest.mark.parametrize("path", ["/echo", "/forgiving"])
async def test_a_content_length_over_the_limit_is_413_without_reading(path: str) -> None:
    async with client(make_app()) as http:
        r = await http.post(path, content=b"x" * 101)
    assert r.status_code == 413
    assert r.json() == {
        "error": "too-large",
        "detail": "the request body is larger than 100 bytes",
        "max_bytes": 100,
    }


async def test_the_application_is_not_called_and_the_body_not_received() -> None:
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append("app")

    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-length", str(10**12).encode())]
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers}
    await BodyLimit(app, max_bytes=10)(scope, receive, send)
    assert called == [] and sent[0]["status"] == 413


@pytest.mark.parametrize("path", ["/echo", "/forgiving"])
async def test_a_chunked_body_over_the_limit_is_413_as_it_arrives(path: str) -> None:
    received = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal received
        async for chunk in chunked(10_000):
            received += len(chunk)
            yield chunk

    async with client(make_app()) as http:
        r = await http.post(path, content=counting())
    # whatever the application made of the error (it may answer 400 itself), 413
    assert r.status_code == 413 and r.json()["max_bytes"] == 100
    assert received < 10_000  # the rest of the body was never asked for


async def test_a_path_prefix_has_its_own_limit() -> None:
    async with client(make_app()) as http:
        assert (await http.post("/uploads/echo", content=b"x" * 1001)).status_code == 413
        assert (await http.post("/uploads/echo", content=chunked(1010))).status_code == 413
        assert (await http.post("/echo", content=b"x" * 101)).status_code == 413
    assert BodyLimit(echo, max_bytes=5, paths={"/a/": 7, "/a/b/": 9}).limit_for("/a/b/c") == 9


@pytest.mark.parametrize("value", [b"-1", b"ten", b"1e3", b""])
async def test_a_malformed_content_length_is_400(value: bytes) -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "POST", "path": "/echo", "headers": []}
    scope["headers"] = [(b"content-length", value)]
    await BodyLimit(make_app(), max_bytes=10)(scope, receive, send)
    assert sent[0]["status"] == 400 and b"Content-Length" in sent[1]["body"]


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="body limits"):
        BodyLimit(echo, max_bytes=-1)


async def test_an_exception_is_a_500_with_an_error_id_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="freshkeep.errors"):
        async with client(make_app()) as http:
            r = await http.get("/boom")
    assert r.status_code == 500 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"error", "error_id"} and body["error"] == "internal"
    assert "SELECT" not in r.text and "secret" not in r.text
    (record,) = caplog.records
    assert body["error_id"] in record.getMessage() and SECRET in record.getMessage()
    assert "GET /boom" in record.getMessage() and record.exc_info is not None


async def test_an_exception_after_the_response_started_is_logged_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="freshkeep.errors"):
        async with client(make_app()) as http:
            with pytest.raises(RuntimeError):
                await http.get("/late")
    assert len(caplog.records) == 1


async def test_the_user_guide_example_guards_an_app() -> None:
    app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/boom", boom)])
    await run_block(python_block("user-guide.md", "guards"), {"app": app})
    async with client(app) as http:
        assert (await http.post("/echo", content=b"x" * 1000)).json() == {"size": 1000}
        r = await http.post("/echo", content=b"x" * (1024 * 1024 + 1))
        assert r.status_code == 413 and r.json()["max_bytes"] == 1024 * 1024
        r = await http.get("/boom")
        assert r.status_code == 500 and r.json()["error"] == "internal"
