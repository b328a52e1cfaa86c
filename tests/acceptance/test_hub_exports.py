"""The hub's topic exports: prebuilt on write through the job queue, served from the cache."""

from __future__ import annotations

import io
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from freshkeep import cli
from freshkeep.artifacts import artifact_objects_table, artifacts_table
from freshkeep.demo import exports as exports_module
from freshkeep.demo.exports import EXPORT_CACHE, export_revision
from freshkeep.demo.models import Decision, Task, Workstream
from freshkeep.jobs import jobs_table

from .conftest import HubClient, running_hub

JSON = {"accept": "application/json"}


async def _export(hub: HubClient, topic_id: int) -> tuple[str, dict[str, Any]]:
    r = await hub.http.get(f"/topics/{topic_id}/export", headers=JSON)
    assert r.status_code == 200, r.text
    return r.headers["x-freshkeep-cache"], r.json()


async def _bundle(hub: HubClient, topic_id: int) -> dict[str, Any]:
    r = await hub.http.get(f"/topics/{topic_id}/export")
    assert r.status_code == 307, r.text
    assert r.headers["location"].startswith("/artifacts/topic-export/")
    got = await hub.http.get(r.headers["location"])
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert zf.namelist() == ["topic.json", "tasks.csv", "decisions.csv"]
        doc: dict[str, Any] = orjson.loads(zf.read("topic.json"))
        return doc


async def _prebuild_jobs(hub: HubClient) -> list[list[str]]:
    """The keys of every prebuild job ever enqueued, in order."""
    cache = hub.hub.exports.cache
    async with hub.hub.engine.connect() as conn:
        rows = await conn.execute(
            select(jobs_table.c.id)
            .where(jobs_table.c.task == cache.prebuild_task)
            .order_by(jobs_table.c.id)
        )
        ids = [str(r[0]) for r in rows]
    out = []
    for job_id in ids:
        info = await hub.hub.exports.queue.get_job(job_id)  # type: ignore[attr-defined]
        assert info is not None
        out.append(list(info.args["keys"]))
    return out


async def test_a_miss_builds_once_then_reads_are_hits(hub: HubClient) -> None:
    status, first = await _export(hub, 1)
    assert status == "miss"
    assert first["key"] == "1@0" and first["size"] > 0 and len(first["id"]) == 64
    status, again = await _export(hub, 1)
    assert status == "hit" and again["id"] == first["id"]
    assert hub.hub.exports.cache.stats.built == 1

    doc = await _bundle(hub, 1)
    async with hub.hub.sessionmaker() as s:
        n_tasks = await s.scalar(
            select(func.count())
            .select_from(Task)
            .join(Workstream, Workstream.id == Task.workstream_id)
            .where(Workstream.topic_id == 1)
        )
        n_decisions = await s.scalar(
            select(func.count()).select_from(Decision).where(Decision.topic_id == 1)
        )
    assert doc["topic"]["id"] == 1
    assert len(doc["tasks"]) == n_tasks and len(doc["decisions"]) == n_decisions


async def test_a_write_enqueues_one_prebuild_and_the_next_read_is_a_hit(hub: HubClient) -> None:
    await hub.post("/decisions", {"topic_id": 2, "title": "Ship the exporter"})
    await hub.hub.exports.queue.drain()
    assert await _prebuild_jobs(hub) == [["2@1"]]
    built = hub.hub.exports.cache.stats.built
    assert built == 1  # built by the job, not by a read

    status, art = await _export(hub, 2)
    assert status == "hit" and art["key"] == "2@1"
    assert hub.hub.exports.cache.stats.built == built
    doc = await _bundle(hub, 2)
    assert "Ship the exporter" in [d["title"] for d in doc["decisions"]]


async def test_moving_a_task_to_another_topic_is_one_job_with_both_topics(
    hub: HubClient,
) -> None:
    async with hub.hub.sessionmaker() as s:
        task_id, src = (
            await s.execute(
                select(Task.id, Workstream.topic_id)
                .join(Workstream, Workstream.id == Task.workstream_id)
                .order_by(Task.id)
                .limit(1)
            )
        ).one()
        dest_ws, dest = (
            await s.execute(
                select(Workstream.id, Workstream.topic_id)
                .where(Workstream.topic_id != src)
                .order_by(Workstream.id)
                .limit(1)
            )
        ).one()
    r = await hub.http.patch(f"/tasks/{task_id}", json={"workstream_id": dest_ws})
    assert r.status_code == 200 and r.json()["topic_id"] == dest
    await hub.hub.exports.queue.drain()
    jobs = await _prebuild_jobs(hub)
    assert jobs == [sorted([f"{src}@1", f"{dest}@1"], key=lambda k: int(k.split("@")[0]))]
    assert hub.hub.exports.cache.stats.built == 2

    moved = [t["id"] for t in (await _bundle(hub, dest))["tasks"]]
    assert task_id in moved
    assert task_id not in [t["id"] for t in (await _bundle(hub, src))["tasks"]]


async def test_the_same_change_enqueued_twice_is_one_job(hub: HubClient) -> None:
    exports = hub.hub.exports
    await exports.stop()  # keep the job waiting: no worker runs it
    try:
        keys = ["3@7", "4@2"]
        first = await exports.cache.enqueue_prebuild(exports.queue, keys, change_id="3@7,4@2")
        second = await exports.cache.enqueue_prebuild(exports.queue, keys, change_id="3@7,4@2")
        assert first.enqueued and not second.enqueued
        assert second.reason in ("deduplicated", "in_flight")
        assert await _prebuild_jobs(hub) == [keys]
    finally:
        await exports.queue.start()


async def test_a_rolled_back_write_enqueues_nothing(hub: HubClient) -> None:
    exports = hub.hub.exports
    async with hub.hub.sessionmaker() as s:
        s.add(Decision(topic_id=5, title="never"))
        result = await exports.before_commit(s)
        assert result is not None and result.enqueued
        await s.rollback()
    async with hub.hub.sessionmaker() as s:
        assert await export_revision(s, 5) == 0
    assert await _prebuild_jobs(hub) == []


async def test_progress_events_do_not_touch_the_export(hub: HubClient) -> None:
    await hub.post(
        "/progress", {"topic_id": 1, "event_type": "note", "summary": "x", "author": "a"}
    )
    assert await _prebuild_jobs(hub) == []


async def test_unknown_topic_is_404_and_a_failing_build_is_503(
    hub: HubClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = await hub.http.get("/topics/999/export")
    assert r.status_code == 404 and "topic 999" in r.text

    async def broken(factory: Any, topic_id: int) -> bytes:
        raise RuntimeError("the export database is on fire")

    monkeypatch.setattr(exports_module, "build_topic_export", broken)
    r = await hub.http.get("/topics/1/export", headers=JSON)
    assert r.status_code == 503
    assert r.json()["error"] == "export-unavailable"
    assert hub.hub.exports.cache.stats.failed == 1
    async with hub.hub.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(artifacts_table)) == 0


def test_freshkeep_gc_collects_expired_exports_once(tmp_path: Path) -> None:
    import asyncio

    db = tmp_path / "hub.db"

    async def build_and_expire() -> str:
        async with running_hub(db, seed_tasks=50) as hub:
            _, art = await _export(hub, 1)
            await _export(hub, 2)
            async with hub.hub.engine.begin() as conn:  # long expired, objects untouched since
                await conn.execute(
                    update(artifacts_table)
                    .where(artifacts_table.c.key == "1@0")
                    .values(expires_at=0.0)
                )
                await conn.execute(
                    update(artifact_objects_table)
                    .where(artifact_objects_table.c.artifact_id == art["id"])
                    .values(touched_at=0.0, created_at=0.0)
                )
            return str(art["id"])

    gone = asyncio.run(build_and_expire())
    storage = Path(str(db) + "-artifacts")
    assert any(gone in p.name for p in storage.rglob("*"))

    result = CliRunner().invoke(cli.app, ["gc", "--db", str(db)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if EXPORT_CACHE in ln)
    assert line.split("│")[2].strip() == "1" and line.split("│")[3].strip() == "1", line
    assert not any(gone in p.name for p in storage.rglob("*"))
    assert len([p for p in storage.rglob("*") if p.is_file()]) == 1  # topic 2's, kept

    again = CliRunner().invoke(cli.app, ["gc", "--db", str(db)], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    line = next(ln for ln in again.output.splitlines() if EXPORT_CACHE in ln)
    assert line.split("│")[2].strip() == "0" and line.split("│")[3].strip() == "0", line


async def test_concurrent_writes_with_jobs_running_all_land_and_prebuild(hub: HubClient) -> None:
    """Writers race each other and the prebuild jobs on one SQLite file: every write lands,
    and afterwards each touched topic's export at its latest revision is prebuilt."""
    import asyncio

    async with hub.hub.sessionmaker() as s:
        rows = (
            await s.execute(
                select(Task.id, Workstream.topic_id)
                .join(Workstream, Workstream.id == Task.workstream_id)
                .order_by(Task.id)
                .limit(24)
            )
        ).all()

    async def patch(task_id: int, i: int) -> int:
        r = await hub.http.patch(f"/tasks/{task_id}", json={"title": f"renamed {i}"})
        return r.status_code

    codes = await asyncio.gather(*(patch(t, i) for i, (t, _) in enumerate(rows)))
    assert codes == [200] * len(rows)
    await hub.hub.exports.queue.drain()
    topics = sorted({topic for _, topic in rows})
    built = hub.hub.exports.cache.stats.built
    for topic in topics:
        status, art = await _export(hub, topic)
        assert status == "hit", (topic, art)
        async with hub.hub.sessionmaker() as s:
            assert art["key"] == f"{topic}@{await export_revision(s, topic)}"
    assert hub.hub.exports.cache.stats.built == built
    stats = hub.hub.exports.queue.snapshot().to_dict()
    assert stats["failed"] == 0


async def test_waiting_prebuild_jobs_show_as_the_backlog_in_health(hub: HubClient) -> None:
    exports = hub.hub.exports
    await exports.stop()  # no worker: the write's job waits
    try:
        await hub.post("/decisions", {"topic_id": 2, "title": "Later"})
        assert await exports.queue.waiting(exports.cache.prebuild_task) == 1
        data = asdict(await exports.cache.health_data())
        assert data["prebuild_backlog"] == 1 and data["prebuild_jobs_waiting"] == 1
        report = await hub.hub.keeper.health.run()
        check = next(c for c in report.checks if c.name == "artifacts:topic-export")
        assert check.data["prebuild_backlog"] == 1, check
    finally:
        await exports.queue.start()
    await exports.queue.drain()
    assert (await exports.cache.health_data()).prebuild_backlog == 0
