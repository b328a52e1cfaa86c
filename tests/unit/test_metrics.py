"""Prometheus metrics: scraped from the keeper's counters, histograms from the slow path only."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from freshkeep import BuildContext, ConfigurationError, FreshkeepError, Keeper, Policy, Section
from freshkeep.integrations.prometheus import (
    CONTENT_TYPE,
    FreshkeepCollector,
    instrument,
    metrics_app,
)
from freshkeep.notify import Notice
from freshkeep.processing import Item, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.testing import FakeClock, MemoryRevisions

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: bytes | str) -> Samples:
    """Every sample of a scrape: ``{(name, sorted labels): value}``."""
    if isinstance(text, bytes):
        text = text.decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: Samples, name: str, **labels: str) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


class Builder:
    def __init__(self, field: str) -> None:
        self.field = field
        self.value = 0
        self.fail: Exception | None = None

    async def __call__(self, ctx: BuildContext) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        return {self.field: self.value}


class CountingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def build_finished(self, view: str, section: str, seconds: float) -> None:
        self.calls.append(("build", view, section))

    def stale_served(self, view: str, status: str, age: float) -> None:
        self.calls.append(("stale", view, status, age))


async def test_scrape_after_hits_misses_a_failed_build_and_stale_serves() -> None:
    revs, clock = MemoryRevisions(), FakeClock()
    keeper = Keeper(revs, clock=clock, probe="interval")
    core, tail = Builder("core"), Builder("tail")
    summary = keeper.view(
        "summary",
        sections={"core": Section(core, ["t:a", "t:b"]), "tail": Section(tail, ["t:c"])},
        policy=Policy.swr(60, stale_if_error=600),
    )
    metrics = instrument(keeper)  # views registered before and after are both observed
    strict_builder = Builder("x")
    strict = keeper.view(
        "strict",
        strict_builder,
        sources=["t:x"],
        policy=Policy.strict(stale_if_error=600),
        probe="always",
    )
    watcher = CountingObserver()
    summary.observers.append(watcher)

    assert (await summary.get()).status == "miss"
    for _ in range(3):
        assert (await summary.get()).status == "hit"  # the hit path: no observer call
    assert [c[0] for c in watcher.calls] == ["build", "build"]

    # Another process changed t:a; the interval ends; the entry was confirmed at t=0.
    revs.revisions["t:a"] = 1
    clock.advance(5.0)
    core.fail = RuntimeError("boom")
    assert (await summary.get()).status == "stale"
    await keeper.wait_idle()  # its background refresh fails

    assert (await strict.get()).status == "miss"  # built at t=5
    revs.revisions["t:x"] = 1
    clock.advance(2.0)
    strict_builder.fail = RuntimeError("db on fire")
    assert (await strict.get()).status == "error-stale"  # confirmed 2 s ago

    scrape = samples(metrics.render())
    reads = "freshkeep_view_reads_total"
    assert value(scrape, reads, view="summary", status="miss") == 1
    assert value(scrape, reads, view="summary", status="hit") == 3
    assert value(scrape, reads, view="summary", status="stale") == 1
    assert value(scrape, reads, view="strict", status="miss") == 1
    assert value(scrape, reads, view="strict", status="error-stale") == 1
    builds = "freshkeep_view_builds_total"
    assert value(scrape, builds, view="summary", section="core") == 1
    assert value(scrape, builds, view="summary", section="tail") == 1
    assert value(scrape, builds, view="strict", section="default") == 1
    assert value(scrape, "freshkeep_view_build_errors_total", view="summary") == 1
    assert value(scrape, "freshkeep_view_build_errors_total", view="strict") == 1
    assert value(scrape, "freshkeep_view_background_refreshes_total", view="summary") == 1
    assert value(scrape, "freshkeep_view_builds_in_flight", view="summary") == 0
    assert value(scrape, "freshkeep_view_last_build_timestamp_seconds", view="strict") == (
        clock.time() - 2.0
    )

    # Histograms: one observation per successful section build, exact staleness ages.
    hist = "freshkeep_view_build_duration_seconds"
    for view, section in (("summary", "core"), ("summary", "tail"), ("strict", "default")):
        assert value(scrape, f"{hist}_count", view=view, section=section) == 1
        assert value(scrape, f"{hist}_bucket", view=view, section=section, le="+Inf") == 1
        assert value(scrape, f"{hist}_sum", view=view, section=section) >= 0
    stale = "freshkeep_view_stale_served_age_seconds"
    assert value(scrape, f"{stale}_count", view="summary", status="stale") == 1
    assert value(scrape, f"{stale}_sum", view="summary", status="stale") == 5.0
    assert value(scrape, f"{stale}_bucket", view="summary", status="stale", le="1.0") == 0
    assert value(scrape, f"{stale}_bucket", view="summary", status="stale", le="5.0") == 1
    assert value(scrape, f"{stale}_sum", view="strict", status="error-stale") == 2.0
    assert value(scrape, f"{stale}_bucket", view="strict", status="error-stale", le="1.0") == 0
    assert value(scrape, f"{stale}_bucket", view="strict", status="error-stale", le="5.0") == 1

    # Keeper-level counters.
    assert value(scrape, "freshkeep_store_entries") == 2
    assert value(scrape, "freshkeep_bus_up") == 1
    assert value(scrape, "freshkeep_commits_total") == 0
    assert value(scrape, "freshkeep_revision_probes_total") == keeper.tracker.probes

    # More hits are counted at the next scrape, with no metric call on the hit path.
    core.fail = None
    clock.advance(2.0)  # past the retry backoff of the failed refresh
    await summary.get()
    await keeper.wait_idle()
    before = len(watcher.calls)
    for _ in range(5):
        assert (await summary.get()).status == "hit"
    assert len(watcher.calls) == before
    again = samples(metrics.render())
    assert value(again, reads, view="summary", status="hit") == 3 + 5
    metrics.close()
    assert metrics.collector.observer not in summary.observers


async def test_remotes_notifiers_and_artifacts() -> None:
    clock = FakeClock()
    keeper = Keeper(clock=clock)
    metrics = instrument(keeper)
    calls = 0

    async def fetch(key: Any) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("tracker down")
        return ["open", "done"]

    states = keeper.remote("states", fetch, ttl=10)
    assert await states.get() == ["open", "done"]
    clock.advance(11)
    assert await states.get() == ["open", "done"]  # expired, fetch fails: served on error

    sent: list[Notice] = []

    async def send(notice: Notice) -> None:
        sent.append(notice)

    alerts = keeper.notifier("alerts", send, terminal=lambda s: s == "archived")
    await alerts.observe("t1", "open")
    await alerts.observe("t1", "open")
    await alerts.observe("t1", "done")
    await alerts.observe("t2", "archived")

    scrape = samples(metrics.render())
    assert value(scrape, "freshkeep_remote_fetches_total", remote="states") == 2
    assert value(scrape, "freshkeep_remote_fetch_errors_total", remote="states") == 1
    assert value(scrape, "freshkeep_remote_keys", remote="states") == 1
    assert value(scrape, "freshkeep_remote_failing_keys", remote="states") == 1
    assert value(scrape, "freshkeep_remote_max_age_seconds", remote="states") == 11
    reads = {k[1]: v for k, v in scrape.items() if k[0] == "freshkeep_remote_reads_total"}
    assert sum(reads.values()) == 2
    n = "freshkeep_notifications_total"
    assert value(scrape, n, notifier="alerts", outcome="sent") == len(sent) == 2
    assert value(scrape, n, notifier="alerts", outcome="deduped") == 1
    assert value(scrape, n, notifier="alerts", outcome="skipped") == 1
    assert value(scrape, n, notifier="alerts", outcome="failed") == 0


async def test_job_queues_registered_on_the_keeper() -> None:
    from freshkeep.jobs import MemoryJobQueue

    keeper = Keeper()
    metrics = instrument(keeper)
    queue = keeper.register(MemoryJobQueue())
    try:
        done: list[int] = []

        async def work(ctx: Any, args: dict[str, Any]) -> None:
            done.append(1)

        queue.task("work", work)
        await queue.enqueue("work", dedup_key="w")
        await queue.enqueue("work", dedup_key="w")  # deduplicated
        await queue.drain()
        snap = queue.snapshot()
        scrape = samples(metrics.render())
        j = "freshkeep_jobs_total"
        assert value(scrape, j, queue="jobs", outcome="enqueued") == snap.enqueued == 1
        assert value(scrape, j, queue="jobs", outcome="done") == snap.done == 1 == len(done)
        assert value(scrape, j, queue="jobs", outcome="failed") == 0
        skipped = "freshkeep_jobs_skipped_total"
        assert value(scrape, skipped, queue="jobs", reason="deduplicated") == 1
        assert value(scrape, "freshkeep_job_queue_jobs", queue="jobs", state="queued") == 0
    finally:
        await queue.aclose()


async def test_artifact_caches(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    from sqlalchemy.ext.asyncio import create_async_engine

    from freshkeep.artifacts import ArtifactCache

    keeper = Keeper()
    metrics = instrument(keeper)

    async def build(key: str) -> bytes:
        if key == "bad":
            raise RuntimeError("cannot pack")
        return f"pack of {key}".encode()

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'artifacts.db'}")
    try:
        cache = ArtifactCache(
            "packs", build, index=engine, storage=str(tmp_path / "objects"), keeper=keeper
        )
        await cache.create_tables()
        await cache.get("main")  # built
        await cache.get("main")  # a hit
        await cache.prebuild(["main", "dev"])  # main fresh: skipped; dev built
        with pytest.raises(FreshkeepError):
            await cache.get("bad")
        stats = cache.snapshot().to_dict()
        scrape = samples(metrics.render())
        a = "freshkeep_artifact_builds_total"
        assert value(scrape, a, cache="packs", outcome="built") == stats["built"] == 2
        assert value(scrape, a, cache="packs", outcome="skipped") == stats["skipped"] == 1
        assert value(scrape, a, cache="packs", outcome="failed") == stats["failed"] == 1
        r = "freshkeep_artifact_reads_total"
        assert value(scrape, r, cache="packs", result="hit") == stats["hits"] == 1
        assert value(scrape, r, cache="packs", result="miss") == stats["misses"]
        assert value(scrape, r, cache="packs", result="unavailable") == stats["unavailable"]
        assert value(scrape, "freshkeep_artifact_failing_keys", cache="packs") == 1
        assert value(scrape, "freshkeep_artifact_gc_runs_total", cache="packs") == 0
    finally:
        await engine.dispose()


class Files(Processor):
    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "files", root, "*.txt"

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if item.path.read_text() == "bad":
            raise ValueError("bad file")
        return Outcome({"lines": 1})


async def test_processor_runs(tmp_path: Path) -> None:
    for name, text in (("a", "ok"), ("b", "ok"), ("c", "bad")):
        (tmp_path / f"{name}.txt").write_text(text)
    pipeline = Pipeline(racy_window=0)
    pipeline.register(Files(tmp_path))
    keeper = Keeper()
    metrics = instrument(keeper, pipelines=[pipeline])
    scrape = samples(metrics.render())
    assert value(scrape, "freshkeep_processor_running", processor="files") == 0
    assert not any(k[0] == "freshkeep_processor_last_run_items" for k in scrape)

    stats = await pipeline.run("files")
    scrape = samples(metrics.render())
    items = "freshkeep_processor_last_run_items"
    assert value(scrape, items, processor="files", outcome="processed") == 2
    assert value(scrape, items, processor="files", outcome="failed") == 1
    assert value(scrape, items, processor="files", outcome="skipped") == 0
    assert value(scrape, "freshkeep_processor_last_run_timestamp_seconds", processor="files") == (
        stats.started_at
    )

    await pipeline.run("files")  # nothing changed: the ok files are skipped, the bad deferred
    scrape = samples(metrics.render())
    assert value(scrape, items, processor="files", outcome="skipped") == 2
    assert value(scrape, items, processor="files", outcome="deferred") == 1
    assert value(scrape, items, processor="files", outcome="processed") == 0


async def test_pipelines_watched_by_health_are_reported(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("ok")
    pipeline = Pipeline(racy_window=0)
    pipeline.register(Files(tmp_path))
    keeper = Keeper()
    keeper.health.watch_processor(pipeline, "files", cadence=60)
    metrics = instrument(keeper)  # no pipelines= given: found through the health registry
    await pipeline.run("files")
    scrape = samples(metrics.render())
    items = "freshkeep_processor_last_run_items"
    assert value(scrape, items, processor="files", outcome="processed") == 1


async def test_registries_are_per_keeper_and_a_shared_one_refuses_duplicates() -> None:
    a, b = Keeper(), Keeper()
    a.view("v", Builder("x"), sources=["s"])
    b.view("v", Builder("x"), sources=["s"])
    ma, mb = instrument(a), instrument(b)
    await a.get_view("v").get()
    assert value(samples(ma.render()), "freshkeep_view_reads_total", view="v", status="miss") == 1
    assert ("freshkeep_view_reads_total", (("status", "miss"), ("view", "v"))) not in samples(
        mb.render()
    )
    shared = CollectorRegistry()
    instrument(a, registry=shared)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        instrument(b, registry=shared)
    assert len(b.get_view("v").observers) == 1  # the refused collector let go of the view
    instrument(b, registry=shared, namespace="other")
    assert "other_view_reads_total" in {k[0] for k in samples(_latest(shared))}


def _latest(registry: CollectorRegistry) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(registry)


async def test_an_observer_that_raises_fails_no_read(caplog: pytest.LogCaptureFixture) -> None:
    keeper = Keeper()
    view = keeper.view("v", Builder("x"), sources=["s"])

    class Broken:
        def build_finished(self, view: str, section: str, seconds: float) -> None:
            raise RuntimeError("observer bug")

        def stale_served(self, view: str, status: str, age: float) -> None:
            raise RuntimeError("observer bug")

    view.observers.append(Broken())
    assert (await view.get()).status == "miss"
    assert "an observer of view 'v' failed" in caplog.text


async def test_http_endpoint_content_type_and_token() -> None:
    keeper = Keeper()
    keeper.view("v", Builder("x"), sources=["s"])
    app = Starlette()
    app.add_route("/metrics", metrics_app(keeper))
    app.add_route("/private", metrics_app(keeper, token="s3cret"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        await keeper.get_view("v").get()
        r = await http.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == CONTENT_TYPE
        assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
        assert value(samples(r.text), "freshkeep_view_reads_total", view="v", status="miss") == 1
        assert (await http.head("/metrics")).content == b""
        assert (await http.post("/metrics")).status_code == 405
        assert (await http.get("/private")).status_code == 401
        bad = await http.get("/private", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        ok = await http.get("/private", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and "freshkeep_view_reads_total" in ok.text
        om = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.endswith("# EOF\n")


async def test_scrapes_while_reads_and_builds_run_concurrently() -> None:
    revs = MemoryRevisions()
    keeper = Keeper(revs, probe="always")
    view = keeper.view("v", Builder("x"), sources=["s"])
    metrics = instrument(keeper)
    collector = metrics.collector
    assert isinstance(collector, FreshkeepCollector)

    async def reader() -> None:
        for i in range(50):
            if i % 10 == 0:
                await keeper.bump("s")
            await view.get()

    async def scraper() -> None:
        for _ in range(20):
            samples(metrics.render())
            await asyncio.sleep(0)

    await asyncio.gather(reader(), reader(), scraper())
    scrape = samples(metrics.render())
    total = sum(v for k, v in scrape.items() if k[0] == "freshkeep_view_reads_total")
    assert total == 100
    builds = value(scrape, "freshkeep_view_builds_total", view="v", section="default")
    hist = value(scrape, "freshkeep_view_build_duration_seconds_count", view="v", section="default")
    assert builds == hist == view.stats.builds["default"]


async def test_health_levels_and_processor_lag_as_of_the_last_run(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("ok")
    pipeline = Pipeline(racy_window=0)
    pipeline.register(Files(tmp_path))
    keeper = Keeper()
    keeper.view("v", Builder("x"), sources=["s"])
    keeper.health.watch_processor(pipeline, "files", cadence=60)
    metrics = instrument(keeper)
    assert not any(k[0].startswith("freshkeep_health") for k in samples(metrics.render()))

    report = await keeper.health.run()  # never processed: the lag check warns
    scrape = samples(metrics.render())
    assert report.status == "degraded"
    assert value(scrape, "freshkeep_health_status") == 1
    assert value(scrape, "freshkeep_health_last_run_timestamp_seconds") == report.generated_at
    assert value(scrape, "freshkeep_health_check_level", check="processor:files") == 2
    lag = report.get("processor:files")
    assert lag is not None
    assert value(scrape, "freshkeep_processor_lag_seconds", processor="files") == lag.data["lag"]

    await pipeline.run("files")
    await keeper.health.run()
    scrape = samples(metrics.render())
    assert value(scrape, "freshkeep_health_check_level", check="processor:files") == 0
    assert value(scrape, "freshkeep_processor_lag_seconds", processor="files") == 0


async def test_every_metric_is_documented(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    from sqlalchemy.ext.asyncio import create_async_engine

    from freshkeep.artifacts import ArtifactCache
    from freshkeep.jobs import MemoryJobQueue

    (tmp_path / "a.txt").write_text("ok")
    pipeline = Pipeline(racy_window=0)
    pipeline.register(Files(tmp_path))
    revs = MemoryRevisions()
    keeper = Keeper(revs, probe="always")
    view = keeper.view("v", Builder("x"), sources=["s"], policy=Policy.swr(60))
    remote = keeper.remote("r", lambda key: 1, ttl=0)
    notifier = keeper.notifier("n", lambda notice: None)
    keeper.health.watch_processor(pipeline, "files", cadence=60)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    queue = keeper.register(MemoryJobQueue())

    async def pack(key: str) -> bytes:
        return b"x"

    try:
        cache = ArtifactCache("c", pack, index=engine, storage=str(tmp_path / "o"), keeper=keeper)
        await cache.create_tables()
        await cache.get("k")
        metrics = instrument(keeper)
        await view.get()
        revs.revisions["s"] = 1  # written elsewhere: served stale, refreshed in the background
        assert (await view.get()).status == "stale"
        await keeper.wait_idle()
        await remote.get()
        await notifier.observe("s", 1)
        await pipeline.run("files")
        await keeper.health.run()
        emitted = {
            re.sub(r"_(bucket|count|sum|created)$", "", name)
            for name, _ in samples(metrics.render())
        }
    finally:
        await queue.aclose()
        await engine.dispose()
    guide = (Path(__file__).resolve().parents[2] / "docs" / "health.md").read_text()
    section = guide.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(freshkeep_[a-z_]+)` \|", section, flags=re.M))
    assert emitted - documented == set()
    assert documented - emitted == {"freshkeep_shared_store_up"}  # only with a shared store


OPS = st.lists(
    st.sampled_from(["read", "refresh", "commit", "external", "tick", "fail", "heal", "wait"]),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, swr=st.booleans())
def test_scraped_counters_agree_with_what_happened(ops: list[str], swr: bool) -> None:
    """Whatever the reads, writes, failures and clock do: every read is counted once under its
    status; every stored section build is one histogram observation; every stale or
    error-stale read is one staleness observation."""

    async def scenario() -> None:
        revs, clock = MemoryRevisions(), FakeClock()
        keeper = Keeper(revs, clock=clock, probe="interval")
        core, tail = Builder("core"), Builder("tail")
        policy = Policy.swr(30, stale_if_error=60) if swr else Policy.strict(stale_if_error=60)
        view = keeper.view(
            "v",
            sections={"core": Section(core, ["a"]), "tail": Section(tail, ["b"])},
            policy=policy,
        )
        metrics = instrument(keeper)
        reads = {"ok": 0}
        for op in ops:
            if op in ("read", "refresh"):
                try:
                    await view.get(refresh=op == "refresh")
                except FreshkeepError:
                    pass  # nothing servable: not a read
                else:
                    reads["ok"] += 1
            elif op == "commit":
                await keeper.bump("b")
            elif op == "external":
                revs.revisions["a"] = int(revs.revisions.get("a", 0)) + 1
            elif op == "tick":
                clock.advance(7.0)
            elif op == "fail":
                core.fail = RuntimeError("down")
            elif op == "heal":
                core.fail = None
            else:
                await keeper.wait_idle()
        await keeper.wait_idle()
        scrape = samples(metrics.render())
        counted = {
            dict(labels)["status"]: n
            for (name, labels), n in scrape.items()
            if name == "freshkeep_view_reads_total"
        }
        assert sum(counted.values()) == reads["ok"]
        for section in ("core", "tail"):
            built = view.stats.builds.get(section, 0)
            assert (
                scrape.get(
                    ("freshkeep_view_builds_total", (("section", section), ("view", "v"))), 0
                )
                == built
            )
            assert (
                scrape.get(
                    (
                        "freshkeep_view_build_duration_seconds_count",
                        (("section", section), ("view", "v")),
                    ),
                    0,
                )
                == built
            )
        for status in ("stale", "error-stale"):
            observed = scrape.get(
                (
                    "freshkeep_view_stale_served_age_seconds_count",
                    (("status", status), ("view", "v")),
                ),
                0,
            )
            assert observed == counted.get(status, 0)
        await keeper.aclose()

    asyncio.run(scenario())


def test_a_bad_namespace_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        instrument(Keeper(), namespace="1bad")
    with pytest.raises(ConfigurationError, match="namespace"):
        instrument(Keeper(), namespace="has-dash")
