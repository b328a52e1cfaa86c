"""Starting the reference hub: seeding once, restarting on the same file, bad databases."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshkeep import ConfigurationError
from freshkeep.demo import create_app, hub_app, normalize_url
from tests.acceptance.conftest import running_hub


async def test_seeding_then_restarting_does_not_seed_twice(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    async with running_hub(db, seed_tasks=300) as hub:
        report = hub.hub.seed_report
        assert report is not None and report.seeded
        assert report.counts["tasks"] == 300 and report.counts["progress_events"] >= 60
        body = (await hub.summary()).json()
        assert body["totals"]["tasks"] >= 300 and body["totals"]["topics"] >= 5
        assert len(body["recent_progress"]) == 20
        topic = body["topics"][0]
        ws = await hub.post("/workstreams", {"topic_id": topic["id"], "name": "Extra"})
        await hub.post("/tasks", {"workstream_id": ws["id"], "title": "Survives a restart"})
        revision = (await hub.summary()).headers["x-freshkeep-revision"]
    async with running_hub(db, seed_tasks=300) as hub:
        report = hub.hub.seed_report
        assert report is not None and not report.seeded
        assert "seeded at" in report.reason
        r = await hub.summary()
        assert r.headers["x-freshkeep-cache"] == "miss"  # a new process starts cold
        assert r.json()["totals"]["tasks"] == 301
        # Revisions live in the database: the same data has the same revision after a restart.
        assert r.headers["x-freshkeep-revision"] == revision


async def test_a_database_with_data_is_never_seeded(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    async with running_hub(db, seed_tasks=0) as hub:
        assert hub.hub.seed_report is not None and not hub.hub.seed_report.seeded
        await hub.post("/topics", {"name": "Mine"})
    async with running_hub(db, seed_tasks=100) as hub:
        assert hub.hub.seed_report is not None
        assert hub.hub.seed_report.reason == "the database already holds topics"
        assert (await hub.summary()).json()["totals"]["tasks"] == 0


def test_database_urls() -> None:
    assert normalize_url("hub.db") == "sqlite+aiosqlite:///hub.db"
    assert normalize_url("/tmp/x/hub.db") == "sqlite+aiosqlite:////tmp/x/hub.db"
    assert normalize_url("sqlite:///hub.db") == "sqlite+aiosqlite:///hub.db"
    assert normalize_url("postgresql://u:pw@h/db") == "postgresql+asyncpg://u:pw@h/db"
    assert normalize_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("nonsense://x/y", "cannot use the database URL"),
        ("mysql+notadriver://u@h/db", "cannot use the database URL"),
        ("", "empty"),
    ],
)
def test_a_bad_url_fails_at_once(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        create_app(url, seed_tasks=0)


def test_a_bad_seed_size_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="seed_tasks"):
        create_app(str(tmp_path / "x.db"), seed_tasks=-1)


async def test_an_unreachable_database_fails_at_startup_with_a_clear_error() -> None:
    url = "postgresql+asyncpg://nobody:secret@127.0.0.1:1/nothing"
    with pytest.raises(ConfigurationError, match="cannot open its database") as info:
        async with hub_app(url, seed_tasks=0):
            pass  # pragma: no cover
    assert "secret" not in str(info.value) and "127.0.0.1:1" in str(info.value)


def test_a_missing_sqlite_directory_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"directory .* does not exist"):
        create_app(str(tmp_path / "no" / "such" / "dir.db"), seed_tasks=0)
