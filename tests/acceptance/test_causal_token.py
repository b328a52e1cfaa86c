"""Read-your-writes across instances: a write's revision header is a causal token.

Two hubs on one database stand for two processes behind a load balancer; they share no bus,
so the second learns of the first's writes only by reading revisions (every resync_interval)
or when a request carries a token newer than what it knows.
"""

from __future__ import annotations

from pathlib import Path

from freshkeep import Settings
from freshkeep.core.entry import parse_revision
from freshkeep.demo import hub_app

from .conftest import HubClient, running_hub


async def test_a_write_returns_its_revision_and_a_token_read_sees_it(hub: HubClient) -> None:
    await hub.summary()
    topic = (await hub.http.get("/topics")).json()[0]
    r = await hub.http.post(
        "/progress",
        json={"topic_id": topic["id"], "event_type": "note", "summary": "s", "author": "a"},
    )
    token = r.headers["x-freshkeep-revision"]
    assert "table:progress_events=" in token
    read = await hub.summary(headers={"X-Freshkeep-Min-Revision": token})
    served = parse_revision(read.headers["x-freshkeep-revision"])
    # The token also names partitions of the table (table:progress_events/...), which the
    # summary does not read: it must serve at least the token's revision of what it reads.
    read_sources = {s: rev for s, rev in parse_revision(token).items() if "/" not in s}
    assert "table:progress_events" in read_sources
    for source, rev in read_sources.items():
        assert served[source] >= rev


async def test_a_token_makes_another_instance_catch_up(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    slow = Settings(resync_interval=3600)  # without a token, B would not look for an hour
    async with (
        running_hub(db, seed_tasks=50) as a,
        hub_app(str(db), seed_tasks=0, settings=slow) as b_app,
    ):
        import httpx

        transport = httpx.ASGITransport(app=b_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as b:
            first = await b.get("/state/summary")
            assert (await b.get("/state/summary")).headers["x-freshkeep-cache"] == "hit"
            topic = (await a.http.get("/topics")).json()[0]
            w = await a.http.post(
                "/progress",
                json={"topic_id": topic["id"], "event_type": "n", "summary": "new", "author": "x"},
            )
            token = w.headers["x-freshkeep-revision"]
            untokened = await b.get("/state/summary")
            assert untokened.headers["x-freshkeep-cache"] == "hit"  # B has not heard of it
            assert untokened.content == first.content
            caught = await b.get("/state/summary", headers={"X-Freshkeep-Min-Revision": token})
            assert caught.headers["x-freshkeep-cache"] in ("section", "miss")
            assert caught.json()["recent_progress"][0]["summary"] == "new"
            bad = await b.get("/state/summary", headers={"X-Freshkeep-Min-Revision": "nonsense"})
            assert bad.status_code == 400 and bad.json()["header"] == "X-Freshkeep-Min-Revision"
