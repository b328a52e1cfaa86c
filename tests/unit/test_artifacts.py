"""Artifact caches on SQLite and a local directory: signed URLs and their route (Range, 403),
configuration errors, the job glue against a minimal queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.routing import Mount

from freshkeep.artifacts import ArtifactCache, Built, artifact_app, artifact_routes
from freshkeep.artifacts._signing import Grant, sign, signed_query, verify
from freshkeep.exceptions import ConfigurationError, DuplicateNameError, InvalidSignatureError
from freshkeep.jobs import EnqueueResult, JobContext
from freshkeep.settings import Settings
from tests.integration.artifacts_helpers import Builder, MovableClock, make_cache, sha


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    yield engine
    await engine.dispose()


@pytest.fixture
async def cache(engine: AsyncEngine, tmp_path: Path) -> ArtifactCache:
    c = make_cache(engine, tmp_path, Builder())
    await c.create_tables()
    return c


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")


# -- signatures ----------------------------------------------------------------------------


def test_a_signature_covers_every_field_of_the_grant() -> None:
    grant = Grant("exports", "a" * 64, 2_000_000_000, "text/csv", "t.csv")
    query = dict(parse_qsl(signed_query(b"k", grant)))
    assert verify(b"k", "exports", "a" * 64, query, now=1.0) == grant
    tampered = [
        ("exports", "b" * 64, query),
        ("other", "a" * 64, query),
        ("exports", "a" * 64, {**query, "expires": "2000000001"}),
        ("exports", "a" * 64, {**query, "type": "text/html"}),
        ("exports", "a" * 64, {**query, "name": "x.exe"}),
    ]
    for cache, oid, q in tampered:
        with pytest.raises(InvalidSignatureError, match="does not match"):
            verify(b"k", cache, oid, q, now=1.0)
    with pytest.raises(InvalidSignatureError, match="does not match"):
        verify(b"other key", "exports", "a" * 64, query, now=1.0)
    with pytest.raises(InvalidSignatureError, match="expired"):
        verify(b"k", "exports", "a" * 64, query, now=2_000_000_000)
    with pytest.raises(InvalidSignatureError, match="no 'expires'"):
        verify(b"k", "exports", "a" * 64, {"sig": query["sig"]}, now=1.0)
    with pytest.raises(InvalidSignatureError, match="not an integer"):
        verify(b"k", "exports", "a" * 64, {**query, "expires": "soon"}, now=1.0)
    assert sign(b"k", grant) == query["sig"]


# -- the route -----------------------------------------------------------------------------


async def test_a_signed_url_serves_the_bytes_with_range_support(cache: ArtifactCache) -> None:
    data = bytes(range(256)) * 8
    cache._builder = Builder()
    cache._builder.content["big"] = data  # type: ignore[attr-defined]
    art = await cache.get("big")
    app = Starlette(routes=[Mount("/artifacts", routes=artifact_routes(cache))])
    async with client(app) as http:
        full = await http.get(art.url)
        assert full.status_code == 200 and full.content == data
        assert full.headers["accept-ranges"] == "bytes"
        assert full.headers["content-type"] == "application/octet-stream"
        part = await http.get(art.url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
        tail = await http.get(art.url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        beyond = await http.get(art.url, headers={"Range": f"bytes={len(data) + 5}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(data)}"
        head = await http.head(art.url)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))


async def test_a_bad_or_expired_signature_is_refused_with_403_json(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    clock = MovableClock()
    cache = make_cache(engine, tmp_path, Builder(), clock=clock, url_ttl=60.0)
    await cache.create_tables()
    art = await cache.get("a")
    path, query = art.url.split("?", 1)
    params = dict(parse_qsl(query))
    async with client(artifact_app(cache)) as http:
        base = path.removeprefix("/artifacts")
        assert (await http.get(f"{base}?{query}")).content == b"artifact:a"
        bad = await http.get(base, params={**params, "sig": "0" * 64})
        assert bad.status_code == 403
        assert bad.json()["error"] == "invalid-signature"
        assert "does not match" in bad.json()["detail"]
        assert (await http.get(base)).status_code == 403
        clock.advance(61)
        expired = await http.get(f"{base}?{query}")
        assert expired.status_code == 403 and "expired" in expired.json()["detail"]
        unknown = await http.get(f"/nope/{art.id}?{query}")
        assert unknown.status_code == 404
    with pytest.raises(DuplicateNameError):
        artifact_routes(cache, [cache])


async def test_content_type_and_file_name_travel_in_the_signed_url(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async def build(key: str) -> Built:
        return Built(b"a,b\n1,2\n", content_type="text/csv", filename=f"{key}.csv")

    cache = make_cache(engine, tmp_path, build)
    await cache.create_tables()
    art = await cache.get("topic 1")
    assert (art.content_type, art.filename) == ("text/csv", "topic 1.csv")
    async with client(artifact_app(cache)) as http:
        resp = await http.get(art.url.removeprefix("/artifacts"))
        assert resp.status_code == 200 and resp.content == b"a,b\n1,2\n"
        assert resp.headers["content-type"].startswith("text/csv")
        assert resp.headers["content-disposition"] == "attachment; filename*=UTF-8''topic%201.csv"


async def test_a_url_of_a_collected_object_is_a_404(cache: ArtifactCache) -> None:
    art = await cache.get("a")
    await cache.storage.delete("exports", [art.id])
    async with client(artifact_app(cache)) as http:
        resp = await http.get(art.url.removeprefix("/artifacts"))
        assert resp.status_code == 404 and resp.json()["error"] == "not-found"


# -- configuration -------------------------------------------------------------------------


async def test_bad_configuration_is_refused_with_a_clear_error(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    build = Builder()
    root = str(tmp_path / "o")
    with pytest.raises(ConfigurationError, match="name"):
        ArtifactCache("a b", build, index=engine, storage=root)
    with pytest.raises(ConfigurationError, match="async"):
        ArtifactCache("x", lambda key: b"", index=engine, storage=root)  # type: ignore[arg-type,return-value]
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        ArtifactCache("x", build, index="sqlite://", storage=root)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl must be"):
        ArtifactCache("x", build, index=engine, storage=root, ttl=0)
    with pytest.raises(ConfigurationError, match="gc_batch"):
        ArtifactCache("x", build, index=engine, storage=root, gc_batch=0)
    with pytest.raises(ConfigurationError, match="storage"):
        ArtifactCache("x", build, index=engine, storage="nosuchproto://bucket")
    cache = ArtifactCache("x", build, index=engine, storage=root)
    await cache.create_tables()
    with pytest.raises(ConfigurationError, match="key must be"):
        await cache.get("")
    with pytest.raises(ConfigurationError, match="key must be"):
        await cache.prebuild(["k" * 2000])


async def test_defaults_come_from_settings_and_a_secret_is_generated(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHKEEP_ARTIFACT_STORAGE_URL", str(tmp_path / "from-env"))
    monkeypatch.setenv("FRESHKEEP_ARTIFACT_TTL", "123")
    monkeypatch.setenv("FRESHKEEP_ARTIFACT_GC_BATCH", "7")
    one = ArtifactCache("x", Builder(), index=engine)
    two = ArtifactCache("y", Builder(), index=engine)
    assert one.storage.root == str(tmp_path / "from-env") and one.ttl == 123.0
    assert one.gc_batch == 7 and one.url_base == "/artifacts/x"
    assert one._secret != two._secret  # generated per cache when no secret is set
    monkeypatch.setenv("FRESHKEEP_ARTIFACT_URL_SECRET", "shared")
    three = ArtifactCache("z", Builder(), index=engine, settings=Settings())
    assert three._secret == b"shared"


async def test_a_builder_returning_something_else_fails_clearly(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async def build(key: str) -> Any:
        return "not bytes"

    cache = make_cache(engine, tmp_path, build)
    await cache.create_tables()
    with pytest.raises(Exception, match="must return bytes or Built"):
        await cache.get("a")
    assert cache.stats.failed == 1


# -- job glue against a minimal queue ------------------------------------------------------


class TinyQueue:
    """Just enough of the job port: tasks, one enqueue per dedup key, run on demand."""

    def __init__(self) -> None:
        self.tasks: dict[str, Any] = {}
        self.periodics: dict[str, float] = {}
        self.jobs: list[tuple[str, dict[str, Any]]] = []
        self.keys: set[str] = set()
        self.connections: list[Any] = []

    def task(self, name: str, func: Any, **kw: Any) -> None:
        self.tasks[name] = (func, kw)

    def periodic(self, task: str, every: float, **kw: Any) -> None:
        self.periodics[task] = every

    async def enqueue(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        dedup_key: str | None = None,
        dedup_scope: str = "queued",
        delay: float = 0.0,
        connection: Any = None,
    ) -> EnqueueResult:
        self.connections.append(connection)
        if dedup_key in self.keys:
            return EnqueueResult(None, False, "deduplicated")
        if dedup_key is not None:
            self.keys.add(dedup_key)
        self.jobs.append((task, dict(args or {})))
        return EnqueueResult(str(len(self.jobs)), True)

    async def run_all(self) -> list[Any]:
        out = []
        while self.jobs:
            task, args = self.jobs.pop(0)
            func, _ = self.tasks[task]
            out.append(await func(JobContext("1", task, 1), args))
        return out


async def test_register_and_enqueue_one_job_per_change(cache: ArtifactCache) -> None:
    queue = TinyQueue()
    cache.register_jobs(queue, gc_every=60.0, retries=3, backoff=0.5)
    assert set(queue.tasks) == {"artifacts.exports.prebuild", "artifacts.exports.gc"}
    assert queue.tasks["artifacts.exports.prebuild"][1]["retries"] == 3
    lock = queue.tasks["artifacts.exports.gc"][1]["lock"]
    assert lock({}) == "artifacts.exports.gc"
    assert queue.periodics == {"artifacts.exports.gc": 60.0}
    assert cache.gc_interval == 60.0  # the health check's default GC-age threshold: 2x this
    first = await cache.enqueue_prebuild(queue, ["a", "b", "a"], change_id=41, connection="tx")
    assert first.enqueued and queue.jobs == [("artifacts.exports.prebuild", {"keys": ["a", "b"]})]
    assert queue.connections == ["tx"]
    again = await cache.enqueue_prebuild(queue, ["a", "b"], change_id=41)
    assert not again.enqueued and again.reason == "deduplicated"
    odd = await cache.enqueue_prebuild(queue, ["c"], change_id="topic 7 / rev #3")
    assert odd.enqueued
    none = await cache.enqueue_prebuild(queue, [], change_id=42)
    assert (none.enqueued, none.reason) == (False, "empty")
    results = await queue.run_all()
    assert results[0] == {"requested": 2, "built": 2, "skipped": 0, "failed": 0}
    assert results[1]["built"] == 1
    assert sorted(cache._builder.calls) == ["a", "b", "c"]  # type: ignore[attr-defined]
    queue.jobs.append(("artifacts.exports.gc", {}))
    (gc,) = await queue.run_all()
    assert gc["rows"] == 0


async def test_a_prebuild_job_with_bad_args_fails_clearly(cache: ArtifactCache) -> None:
    queue = TinyQueue()
    cache.register_jobs(queue)
    func, _ = queue.tasks["artifacts.exports.prebuild"]
    with pytest.raises(ConfigurationError, match="keys"):
        await func(JobContext("1", "artifacts.exports.prebuild", 1), {"keys": "a"})


async def test_a_gc_job_with_a_prefix_collects_that_scope_only(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    clock = MovableClock()
    cache = make_cache(engine, tmp_path, Builder(), clock=clock)
    await cache.create_tables()
    queue = TinyQueue()
    cache.register_jobs(queue)
    await cache.prebuild(["t1/a", "t2/a"])
    clock.advance(61)
    queue.jobs.append(("artifacts.exports.gc", {"prefix": "t1/"}))
    (scoped,) = await queue.run_all()
    assert scoped["rows"] == 1 and (await cache.index.row("exports", "t2/a")) is not None
    func, _ = queue.tasks["artifacts.exports.gc"]
    with pytest.raises(ConfigurationError, match="'prefix': str"):
        await func(JobContext("1", "artifacts.exports.gc", 1), {"prefix": 7})
    with pytest.raises(ConfigurationError, match="leave it out to collect the whole cache"):
        await func(JobContext("1", "artifacts.exports.gc", 1), {"prefix": ""})
    queue.jobs.append(("artifacts.exports.gc", {}))
    (whole,) = await queue.run_all()
    assert whole["rows"] == 1


async def test_health_data_names_and_a_fresh_cache(cache: ArtifactCache) -> None:
    health = asdict(await cache.health_data())
    assert {
        "prebuild_backlog": 0,
        "gc_backlog": 0,
        "oldest_expired_age": None,
        "failing_keys": 0,
        "last_error": None,
    }.items() <= health.items()
    stats = cache.snapshot().to_dict()
    for name in ("built", "skipped", "failed", "hits", "misses", "gc_rows", "last_error"):
        assert name in stats


async def test_cancelled_readers_do_not_cancel_the_shared_build(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    build = Builder(delay=0.05)
    cache = make_cache(engine, tmp_path, build)
    await cache.create_tables()
    first = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(cache.get("a"))
    await asyncio.sleep(0)
    first.cancel()
    art = await second
    assert art.id == sha(b"artifact:a") and build.calls == ["a"]
    assert urlsplit(art.url).path == f"/artifacts/exports/{art.id}"
    assert art.url_expires_at <= time.time() + 300 + 1
