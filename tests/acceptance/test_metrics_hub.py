"""The hub's ``GET /metrics``: what reads and writes over HTTP do to the scraped samples."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import HubClient


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(
    scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **kw: str
) -> float:
    return scrape[(name, tuple(sorted(kw.items())))]


async def test_metrics_follow_reads_and_a_write(hub: HubClient) -> None:
    assert (await hub.summary()).headers["x-freshkeep-cache"] == "miss"
    assert (await hub.summary()).headers["x-freshkeep-cache"] == "hit"
    topic = (await hub.http.get("/topics")).json()[0]["id"]
    body = {"topic_id": topic, "event_type": "note", "summary": "metrics", "author": "ci"}
    await hub.post("/progress", body)
    assert (await hub.summary()).headers["x-freshkeep-cache"] == "section"

    r = await hub.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    scrape = samples(r.text)
    reads = "freshkeep_view_reads_total"
    assert value(scrape, reads, view="summary", status="miss") == 1
    assert value(scrape, reads, view="summary", status="hit") == 1
    assert value(scrape, reads, view="summary", status="section") == 1
    builds = "freshkeep_view_builds_total"
    assert value(scrape, builds, view="summary", section="core") == 1
    # the new event is applied to the progress tail (a delta), not rebuilt
    assert value(scrape, builds, view="summary", section="progress") == 1
    hist = "freshkeep_view_build_duration_seconds_count"
    assert value(scrape, hist, view="summary", section="progress") == 1
    assert hub.hub.summary.stats.deltas == {"progress": 1}
    assert value(scrape, "freshkeep_commits_total") >= 1
    for processor in ("evidence", "usage"):
        assert value(scrape, "freshkeep_processor_running", processor=processor) == 0
    assert "/metrics" not in (await hub.http.get("/openapi.json")).text
