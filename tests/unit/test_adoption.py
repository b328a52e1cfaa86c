"""A plain FastAPI + SQLAlchemy service adopts freshkeep in at most 8 added lines
(:mod:`tests.apps.service_plain` -> :mod:`tests.apps.service_adopted`, counted from their
diff), and then answers as a cached service: miss, hit, ETag and 304, per-topic entries, 404s,
the same bodies as before."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.apps import service_adopted, service_plain

APPS = Path(service_plain.__file__).parent


def test_adopting_freshkeep_adds_at_most_8_lines_and_changes_none() -> None:
    plain = (APPS / "service_plain.py").read_text().splitlines()
    adopted = (APPS / "service_adopted.py").read_text().splitlines()
    diff = list(difflib.unified_diff(plain, adopted, lineterm="", n=0))
    added = [d[1:] for d in diff if d.startswith("+") and not d.startswith("+++")]
    removed = [d[1:] for d in diff if d.startswith("-") and not d.startswith("---")]
    code = [line for line in added if line.strip()]
    assert removed == []
    assert 0 < len(code) <= 8, code
    assert sum("freshkeep" in line for line in code) == 2  # the two imports


@pytest.fixture
async def both(tmp_path: Path) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    clients: dict[str, httpx.AsyncClient] = {}
    apps: list[FastAPI] = []
    contexts = []
    for name, module in (("plain", service_plain), ("adopted", service_adopted)):
        app = module.create_app(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        apps.append(app)
        transport = httpx.ASGITransport(app=app)
        clients[name] = httpx.AsyncClient(transport=transport, base_url="http://app")
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)


async def _write(clients: dict[str, httpx.AsyncClient], path: str, body: dict[str, Any]) -> None:
    for client in clients.values():
        r = await client.post(path, json=body)
        assert r.status_code == 201, r.text


async def test_the_adopted_service_answers_as_the_plain_one_and_as_a_cache(
    both: dict[str, httpx.AsyncClient],
) -> None:
    plain, adopted = both["plain"], both["adopted"]
    await _write(both, "/topics", {"name": "alpha"})
    await _write(both, "/topics", {"name": "beta"})
    await _write(both, "/tasks", {"topic_id": 1})

    miss = await adopted.get("/state/summary")
    hit = await adopted.get("/state/summary")
    assert miss.json() == hit.json() == (await plain.get("/state/summary")).json()
    assert [r.headers["x-freshkeep-cache"] for r in (miss, hit)] == ["miss", "hit"]
    assert hit.headers["etag"] == miss.headers["etag"]
    not_modified = await adopted.get(
        "/state/summary", headers={"if-none-match": hit.headers["etag"]}
    )
    assert not_modified.status_code == 304

    await _write(both, "/progress", {"topic_id": 1, "summary": "started"})
    after = await adopted.get("/state/summary")
    assert after.headers["x-freshkeep-cache"] == "miss" and after.json()["progress"] == ["started"]
    assert after.json() == (await plain.get("/state/summary")).json()
    changed = await adopted.get("/state/summary", headers={"if-none-match": hit.headers["etag"]})
    assert changed.status_code == 200

    one = await adopted.get("/topics/1/summary")
    two = await adopted.get("/topics/2/summary")
    assert one.json() == (await plain.get("/topics/1/summary")).json()
    assert two.json() == {"topic": "beta", "tasks": {}}
    await _write(both, "/tasks", {"topic_id": 2, "status": "done"})  # topic 2's partition
    assert (await adopted.get("/topics/1/summary")).headers["x-freshkeep-cache"] == "hit"
    again = await adopted.get("/topics/2/summary")
    assert again.headers["x-freshkeep-cache"] == "miss"
    assert again.json() == (await plain.get("/topics/2/summary")).json()


async def test_a_missing_topic_is_404_as_before_until_it_is_created(
    both: dict[str, httpx.AsyncClient],
) -> None:
    plain, adopted = both["plain"], both["adopted"]
    for _ in range(2):  # the second answer is cached
        r = await adopted.get("/topics/1/summary")
        assert r.status_code == 404 and r.json() == (await plain.get("/topics/1/summary")).json()
    assert r.headers["x-freshkeep-cache"] == "hit"
    assert (await adopted.get("/topics/x/summary")).status_code == 422
    await _write(both, "/topics", {"name": "alpha"})
    created = await adopted.get("/topics/1/summary")
    assert created.status_code == 200 and created.json() == {"topic": "alpha", "tasks": {}}
