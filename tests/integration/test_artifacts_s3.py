"""Artifact objects on S3-compatible storage: moto's S3 server on loopback, s3fs pointed at it;
presigned URLs fetched with a plain HTTP GET."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep.artifacts import ArtifactCache, Built, FsspecStorage, ObjectStorage, artifact_app
from freshkeep.settings import Settings
from freshkeep.testing.conformance import ObjectStorageSuite
from tests.integration.artifacts_helpers import Builder, MovableClock, sha

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(endpoint: str) -> dict[str, Any]:
    options = {
        "endpoint_url": endpoint,
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"region_name": "eu-west-1"},
        "skip_instance_cache": True,
    }
    name = f"fk-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(name)
    return {"name": name, "options": options, "fs": fs}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    yield engine
    await engine.dispose()


def s3_cache(engine: AsyncEngine, bucket: dict[str, Any], build: Any, **kw: Any) -> ArtifactCache:
    return ArtifactCache(
        "exports",
        build,
        index=engine,
        storage=f"s3://{bucket['name']}/artifacts",
        storage_options=bucket["options"],
        ttl=60.0,
        max_stale_on_error=0.0,
        orphan_grace=30.0,
        settings=Settings(),
        **kw,
    )


def s3_ids(bucket: dict[str, Any]) -> set[str]:
    fs = bucket["fs"]
    fs.invalidate_cache()
    try:
        return {p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket['name']}/artifacts/exports")}
    except FileNotFoundError:
        return set()


async def test_objects_are_written_served_presigned_and_collected_on_s3(
    engine: AsyncEngine, bucket: dict[str, Any], endpoint: str
) -> None:
    clock = MovableClock()
    build = Builder()
    cache = s3_cache(engine, bucket, build, clock=clock)
    assert not cache.storage.local
    await cache.create_tables()
    assert await cache.prebuild(["a", "b"]) == {
        "requested": 2,
        "built": 2,
        "skipped": 0,
        "failed": 0,
    }
    assert s3_ids(bucket) == {sha(b"artifact:a"), sha(b"artifact:b")}
    art = await cache.get("a")
    assert art.status == "hit" and art.url.startswith(endpoint + "/")
    assert "Signature" in art.url or "X-Amz-Signature" in art.url
    async with httpx.AsyncClient() as http:
        resp = await http.get(art.url)
        assert resp.status_code == 200 and resp.content == b"artifact:a"
        part = await http.get(art.url, headers={"Range": "bytes=0-7"})
        assert part.status_code == 206 and part.content == b"artifact"
    clock.advance(61)
    await cache.prebuild(["b"])  # "a" stays expired
    result = await cache.gc(now=clock.time() + 31)
    assert (result["rows"], result["objects"]) == (1, 1)
    assert s3_ids(bucket) == {sha(b"artifact:b")}


async def test_presigned_urls_carry_the_content_type_and_file_name(
    engine: AsyncEngine, bucket: dict[str, Any]
) -> None:
    async def build(key: str) -> Built:
        return Built(b"id,name\n", content_type="text/csv", filename=f"{key}.csv")

    cache = s3_cache(engine, bucket, build)
    await cache.create_tables()
    art = await cache.get("topic-9")
    async with httpx.AsyncClient() as http:
        resp = await http.get(art.url)
    assert resp.status_code == 200 and resp.content == b"id,name\n"
    assert resp.headers["content-type"] == "text/csv"
    assert "topic-9.csv" in resp.headers["content-disposition"]


async def test_an_orphan_on_s3_older_than_the_grace_is_deleted(
    engine: AsyncEngine, bucket: dict[str, Any]
) -> None:
    cache = s3_cache(engine, bucket, Builder())
    await cache.create_tables()
    orphan = sha(b"left behind")
    await cache.storage.put("exports", orphan, b"left behind")
    assert await cache.storage.exists("exports", orphan)
    kept = await cache.gc(now=time.time())  # younger than the grace: kept
    assert (kept["orphans"], kept["objects"]) == (0, 0) and s3_ids(bucket) == {orphan}
    gone = await cache.gc(now=time.time() + 60)
    assert (gone["orphans"], gone["objects"]) == (1, 1)
    assert s3_ids(bucket) == set()
    assert not await cache.storage.exists("exports", orphan)
    await cache.storage.delete("exports", [orphan])  # deleting a missing object is no error


async def test_the_route_redirects_to_a_presigned_url_for_s3_objects(
    engine: AsyncEngine, bucket: dict[str, Any]
) -> None:
    cache = s3_cache(engine, bucket, Builder(), url_secret="k")
    await cache.create_tables()
    art = await cache.get("a")
    grant_url = f"/exports/{art.id}"
    from freshkeep.artifacts._signing import Grant, expiry, signed_query

    query = signed_query(b"k", Grant("exports", art.id, expiry(time.time(), 60)))
    transport = httpx.ASGITransport(app=artifact_app(cache))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as hub:
        resp = await hub.get(f"{grant_url}?{query}")
    assert resp.status_code == 307
    async with httpx.AsyncClient() as http:
        assert (await http.get(resp.headers["location"])).content == b"artifact:a"


def test_storage_urls_are_checked() -> None:
    storage = FsspecStorage("memory://fk-test-objects")
    with pytest.raises(ValueError, match="cache name"):
        storage.path("bad name", "a" * 64)
    with pytest.raises(ValueError, match="object id"):
        storage.path("exports", "not-an-id")


class TestS3ObjectStorage(ObjectStorageSuite):
    """The fsspec adapter on S3 (moto), as the local directory runs it in tests/unit."""

    @pytest.fixture
    async def storage(self, bucket: dict[str, Any]) -> AsyncIterator[ObjectStorage]:
        yield FsspecStorage(f"s3://{bucket['name']}/objects", **bucket["options"])
