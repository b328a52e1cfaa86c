"""The hub's admin route that drops a view's entry or one section of it, and the status labels
an operator maps for clients that read other words in the status header."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.conftest import running_hub

ADMIN = {"Authorization": "Bearer admin-secret"}


async def test_an_admin_drops_one_section_or_the_whole_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHKEEP_ADMIN_TOKEN", "admin-secret")
    async with running_hub(tmp_path / "hub.db", seed_tasks=20) as hub:
        await hub.summary()
        assert (await hub.summary()).headers["x-freshkeep-cache"] == "hit"
        url = "/admin/views/summary/invalidate"
        assert (await hub.http.post(url, params={"section": "progress"})).status_code == 401
        r = await hub.http.post(url, params={"section": "progress"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["dropped"] is True
        r = await hub.summary()
        assert r.headers["x-freshkeep-cache"] == "section"
        assert hub.builds() == {"core": 1, "progress": 2}
        r = await hub.http.post(url, headers=ADMIN)
        assert r.json() == {"view": "summary", "topic": None, "section": None, "dropped": True}
        assert (await hub.summary()).headers["x-freshkeep-cache"] == "miss"
        # Bad input: a 4xx naming what was wrong.
        r = await hub.http.post(url, params={"section": "nope"}, headers=ADMIN)
        assert r.status_code == 422 and "no section 'nope'" in r.json()["detail"]
        r = await hub.http.post("/admin/views/nope/invalidate", headers=ADMIN)
        assert r.status_code == 404
        r = await hub.http.post("/admin/views/topic_summary/invalidate", headers=ADMIN)
        assert r.status_code == 422 and "needs ?topic=ID" in r.json()["detail"]
        topic = (await hub.http.get("/topics")).json()[0]["id"]
        await hub.http.get(f"/topics/{topic}/summary")
        r = await hub.http.post(
            "/admin/views/topic_summary/invalidate", params={"topic": topic}, headers=ADMIN
        )
        assert r.status_code == 200 and r.json()["dropped"] is True
        r = await hub.http.get(f"/topics/{topic}/summary")
        assert r.headers["x-freshkeep-cache"] == "miss"


async def test_the_hub_says_the_status_labels_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "FRESHKEEP_STATUS_LABELS", '{"hit": "hit-revision", "section": "progress-section"}'
    )
    monkeypatch.setenv("FRESHKEEP_ADMIN_TOKEN", "admin-secret")
    async with running_hub(tmp_path / "hub.db", seed_tasks=20) as hub:
        assert (await hub.summary()).headers["x-freshkeep-cache"] == "miss"
        assert (await hub.summary()).headers["x-freshkeep-cache"] == "hit-revision"
        await hub.http.post(
            "/admin/views/summary/invalidate", params={"section": "progress"}, headers=ADMIN
        )
        r = await hub.summary()
        assert r.headers["x-freshkeep-cache"] == "progress-section"
        assert r.headers["cache-status"].startswith("freshkeep; fwd=")


async def test_public_stats_show_an_errors_type_and_the_admin_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHKEEP_ADMIN_TOKEN", "admin-secret")
    async with running_hub(tmp_path / "hub.db", seed_tasks=20) as hub:
        await hub.summary()
        hub.hub.summary.stats.last_error = "OperationalError: no such column: secret [SQL: SELECT]"
        public = (await hub.http.get("/state/stats")).json()
        assert public["views"]["summary"]["last_error"] == "OperationalError"
        assert "SELECT" not in (await hub.http.get("/state/stats")).text
        admin = (await hub.http.get("/state/stats", headers=ADMIN)).json()
        assert "no such column" in admin["views"]["summary"]["last_error"]
