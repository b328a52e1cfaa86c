"""OpenTelemetry: spans of the slow work, the read status on the request span, metrics; all
read back from the SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.routing import Route

from freshkeep import BuildContext, ConfigurationError, Keeper, Policy, Section, Settings
from freshkeep.core import tracing
from freshkeep.exceptions import MissingDependencyError
from freshkeep.integrations.otel import (
    Instrumentation,
    OtelTracer,
    instrument,
    instrument_from_settings,
)
from freshkeep.integrations.routes import HitFastPath, cached_route
from freshkeep.integrations.starlette import endpoint
from freshkeep.jobs import JobContext, MemoryJobQueue
from freshkeep.processing import Item, MemoryProcessingState, Outcome, Pipeline, ProcessContext
from freshkeep.processing import Processor as BaseProcessor
from freshkeep.scheduler import Scheduler
from freshkeep.testing import FakeClock, MemoryRevisions
from tests.docs_blocks import python_block, run_block


class Otel:
    """An SDK tracer provider with an in-memory exporter, a meter provider with an in-memory
    reader, and freshkeep instrumented with both."""

    def __init__(self, keeper: Keeper) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.inst: Instrumentation = instrument(
            keeper, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of ``metric`` by their sorted attributes (a counter's value, a
        histogram's count)."""
        data = self.reader.get_metrics_data()
        out: dict[tuple[tuple[str, Any], ...], Any] = {}
        if data is None:  # nothing was observed
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name != metric:
                        continue
                    for p in m.data.data_points:
                        attrs = tuple(sorted((p.attributes or {}).items()))
                        out[attrs] = getattr(p, "value", None)
                        if out[attrs] is None:
                            out[attrs] = p.count  # a histogram
        return out

    def close(self) -> None:
        self.inst.close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


class Hub:
    def __init__(self) -> None:
        self.revs = MemoryRevisions()
        self.keeper = Keeper(self.revs, probe="always")
        self.fail = False
        self.gate: asyncio.Event | None = None

        async def core(ctx: BuildContext) -> dict[str, int]:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail:
                raise RuntimeError("builder broke")
            return {"core": ctx.revisions["t:a"]}

        async def tail(ctx: BuildContext) -> dict[str, int]:
            return {"tail": ctx.revisions["t:b"]}

        self.summary = self.keeper.view(
            "summary",
            sections={"core": Section(core, ["t:a"]), "tail": Section(tail, ["t:b"])},
            policy=Policy.strict(stale_if_error=60),
        )
        self.swr = self.keeper.view("swr", core, sources=["t:a"], policy=Policy.swr(60))


@pytest.fixture
def hub() -> Iterator[tuple[Hub, Otel]]:
    h = Hub()
    otel = Otel(h.keeper)
    try:
        yield h, otel
    finally:
        otel.close()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_nothing_is_installed_by_default() -> None:
    assert tracing.tracer() is tracing.NO_TRACER and tracing.on_read is None
    with tracing.span("freshkeep.view.build", {"freshkeep.view": "v"}) as span:
        span.set_attribute("x", 1)  # the shared do-nothing span
    with pytest.raises(ConfigurationError, match="subclass"):
        tracing.set_tracer(object())  # type: ignore[arg-type]


async def test_a_build_is_a_span_with_one_child_per_section(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    await h.summary.get()
    (build,) = otel.spans("freshkeep.view.build")
    assert attrs(build) == {
        "freshkeep.view": "summary",
        "freshkeep.view.sections": 2,
        "freshkeep.view.outcome": "miss",
    }
    sections = otel.spans("freshkeep.view.section")
    assert sorted(attrs(s)["freshkeep.view.section"] for s in sections) == ["core", "tail"]
    assert all(s.parent is not None and s.parent.span_id == build.context.span_id for s in sections)
    otel.exporter.clear()
    await h.summary.get()  # a hit: no span
    assert otel.spans() == []
    h.revs.revisions["t:b"] = 1
    assert (await h.summary.get()).status == "section"
    (build,) = otel.spans("freshkeep.view.build")
    assert attrs(build)["freshkeep.view.outcome"] == "section"
    (section,) = otel.spans("freshkeep.view.section")
    assert attrs(section)["freshkeep.view.section"] == "tail"


async def test_a_failing_build_is_a_failed_span(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    h.fail = True
    with pytest.raises(Exception, match="builder broke"):
        await h.summary.get()
    (section,) = otel.spans("freshkeep.view.section")
    (build,) = otel.spans("freshkeep.view.build")
    for span in (section, build):
        assert span.status.status_code is StatusCode.ERROR
        assert any(e.name == "exception" for e in span.events)


class RequestSpans:
    """An ASGI middleware making a server span per request, as an ASGI instrumentation does."""

    def __init__(self, app: Any, provider: TracerProvider) -> None:
        self.app = app
        self.tracer = provider.get_tracer("test")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with self.tracer.start_as_current_span(f"GET {scope['path']}") as span:
            span_id = format(span.get_span_context().span_id, "016x").encode()

            async def send_with_id(message: Any) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], (b"x-span", span_id)]
                await send(message)

            await self.app(scope, receive, send_with_id)


@pytest.fixture
async def client(hub: tuple[Hub, Otel]) -> AsyncIterator[httpx.AsyncClient]:
    h, otel = hub
    app = Starlette(routes=[Route("/summary", endpoint(h.summary)), Route("/swr", endpoint(h.swr))])
    transport = httpx.ASGITransport(app=RequestSpans(app, otel.tracer_provider))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def request_status(otel: Otel, path: str) -> tuple[str, str]:
    request = otel.spans(f"GET {path}")[-1]
    a = attrs(request)
    return a["freshkeep.view"], a["freshkeep.read.status"]


async def test_the_request_span_says_the_read_status(
    hub: tuple[Hub, Otel], client: httpx.AsyncClient
) -> None:
    h, otel = hub
    await client.get("/summary")
    assert request_status(otel, "/summary") == ("summary", "miss")
    r = await client.get("/summary")  # the fast path
    assert r.headers["x-freshkeep-cache"] == "hit"
    assert request_status(otel, "/summary") == ("summary", "hit")
    r = await client.get("/summary", headers={"If-None-Match": r.headers["etag"]})
    assert r.status_code == 304 and request_status(otel, "/summary") == ("summary", "hit")
    h.revs.revisions["t:a"] = 1
    await client.get("/summary")
    assert request_status(otel, "/summary") == ("summary", "section")
    h.fail = True
    h.revs.revisions["t:a"] = 2
    r = await client.get("/summary")
    assert r.headers["x-freshkeep-cache"] == "error-stale"
    assert request_status(otel, "/summary") == ("summary", "error-stale")
    h.summary.invalidate()
    r = await client.get("/summary")
    assert r.status_code == 503 and request_status(otel, "/summary") == ("summary", "unavailable")


async def test_a_hit_answered_by_the_fast_path_sets_the_status_too(
    hub: tuple[Hub, Otel],
) -> None:
    """:class:`~freshkeep.integrations.routes.HitFastPath` answers a hit ahead of the routes:
    the request span around it still says ``hit``."""
    _, otel = hub
    keeper = Keeper(MemoryRevisions(), probe="interval")

    async def build(ctx: BuildContext) -> dict[str, int]:
        return {"n": 1}

    view = keeper.view("pushed", build, sources=["t:a"], public=True)

    async def page() -> None:
        """Served from the view."""

    routed: list[str] = []
    app = Starlette(routes=[Route("/pushed", cached_route(view)(page))])

    class Counting:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            routed.append(scope["path"])
            await self.app(scope, receive, send)

    app.add_middleware(Counting)
    app.add_middleware(HitFastPath)  # outermost
    transport = httpx.ASGITransport(app=RequestSpans(app, otel.tracer_provider))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/pushed")).headers["x-freshkeep-cache"] == "miss"
        assert request_status(otel, "/pushed") == ("pushed", "miss")
        for _ in range(3):  # a hit confirmed by the route, then hits ahead of it
            r = await c.get("/pushed")
            assert r.headers["x-freshkeep-cache"] == "hit"
            assert request_status(otel, "/pushed") == ("pushed", "hit")
        assert len(routed) == 2  # the last two hits never reached the application
    await keeper.aclose()


async def test_a_background_refresh_is_a_child_of_the_request_that_scheduled_it(
    hub: tuple[Hub, Otel], client: httpx.AsyncClient
) -> None:
    h, otel = hub
    await client.get("/swr")
    h.revs.revisions["t:a"] = 1
    h.gate = asyncio.Event()
    r = await client.get("/swr")
    assert r.headers["x-freshkeep-cache"] == "stale"
    assert request_status(otel, "/swr") == ("swr", "stale")
    stale_request = otel.spans("GET /swr")[-1]
    h.gate.set()
    await h.swr.wait_idle()
    build = otel.spans("freshkeep.view.build")[-1]
    assert build.parent is not None and build.parent.span_id == stale_request.context.span_id


async def test_a_read_outside_a_request_span_creates_none(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    app = Starlette(routes=[Route("/summary", endpoint(h.summary))])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await c.get("/summary")
        otel.exporter.clear()
        assert (await c.get("/summary")).headers["x-freshkeep-cache"] == "hit"
    assert otel.spans() == []


async def test_remote_fetches_are_spans(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    calls = 0

    async def fetch(key: Any) -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("tracker down")
        return {"n": calls}

    remote = h.keeper.remote("tracker", fetch, ttl=60, fetch_sync=lambda key: {"n": 0})
    await remote.get()
    remote.reload()
    await remote.get()  # fails: the value held is served
    remote.read_sync("other")
    spans = otel.spans("freshkeep.remote.fetch")
    assert [attrs(s) for s in spans] == [{"freshkeep.remote": "tracker"}] * 3
    assert [s.status.status_code for s in spans] == [
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]


async def test_job_runs_are_spans(hub: tuple[Hub, Otel]) -> None:
    _h, otel = hub
    queue = MemoryJobQueue(poll_interval=0.02)

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        if args["n"] == 1:
            raise ValueError("bad input")

    queue.task("job", job, retries=0)
    for n in range(2):
        await queue.enqueue("job", {"n": n})
    await queue.drain(10)
    await queue.aclose()
    spans = sorted(otel.spans("freshkeep.job.run"), key=lambda s: attrs(s)["freshkeep.job.id"])
    assert [attrs(s)["freshkeep.job.task"] for s in spans] == ["job", "job"]
    assert [attrs(s)["freshkeep.job.attempt"] for s in spans] == [1, 1]
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET, StatusCode.ERROR]


class Files(BaseProcessor):
    name = "files"
    pattern = "*.txt"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        if item.key == "bad.txt":
            raise ValueError("unreadable")
        return Outcome({"bytes": item.size})


async def test_processor_runs_and_items_are_spans(hub: tuple[Hub, Otel], tmp_path: Path) -> None:
    _h, otel = hub
    for name in ("a.txt", "b.txt", "bad.txt"):
        (tmp_path / name).write_text(name)
    pipeline = Pipeline(MemoryProcessingState(), racy_window=0.0)
    pipeline.register(Files(tmp_path))
    await pipeline.run("files")
    (run,) = otel.spans("freshkeep.processor.run")
    assert attrs(run)["freshkeep.processor"] == "files"
    assert attrs(run)["freshkeep.processor.scanned"] == 3
    assert attrs(run)["freshkeep.processor.processed"] == 2
    assert attrs(run)["freshkeep.processor.failed"] == 1
    items = otel.spans("freshkeep.processor.item")
    assert sorted(attrs(s)["freshkeep.item"] for s in items) == ["a.txt", "b.txt", "bad.txt"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in items)
    failed = [s for s in items if s.status.status_code is StatusCode.ERROR]
    assert [attrs(s)["freshkeep.item"] for s in failed] == ["bad.txt"]
    otel.exporter.clear()
    await pipeline.run("files")  # nothing changed: a run span, no item span
    assert len(otel.spans("freshkeep.processor.run")) == 1
    assert otel.spans("freshkeep.processor.item") == []


async def test_scheduled_runs_are_spans(hub: tuple[Hub, Otel]) -> None:
    _h, otel = hub
    ran = asyncio.Event()

    async def tick() -> None:
        ran.set()

    scheduler = Scheduler(clock=FakeClock())
    scheduler.add("tick", tick, every=60, delay=0, jitter=0)
    assert scheduler.tick() == ["tick"]
    await ran.wait()
    await scheduler.wait_idle()
    (span,) = otel.spans("freshkeep.scheduler.run")
    assert attrs(span) == {"freshkeep.scheduler.job": "tick"}


async def test_metrics_mirror_the_main_counters(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    await h.summary.get()
    await h.summary.get()
    h.revs.revisions["t:a"] = 1
    await h.summary.get()
    remote = h.keeper.remote("tracker", lambda key: {"n": 1}, ttl=60)
    await remote.get()
    await remote.get()
    reads = otel.points("freshkeep.view.reads")
    view = ("freshkeep.view", "summary")
    assert reads[(("freshkeep.read.status", "hit"), view)] == 1
    assert reads[(("freshkeep.read.status", "miss"), view)] == 1
    assert reads[(("freshkeep.read.status", "section"), view)] == 1
    builds = otel.points("freshkeep.view.builds")
    assert builds[(view, ("freshkeep.view.section", "core"))] == 2
    assert builds[(view, ("freshkeep.view.section", "tail"))] == 1
    durations = otel.points("freshkeep.view.build.duration")
    assert durations[(view, ("freshkeep.view.section", "core"))] == 2  # observations
    assert otel.points("freshkeep.view.build.errors")[(view,)] == 0
    assert otel.points("freshkeep.remote.fetches")[(("freshkeep.remote", "tracker"),)] == 1
    remote_reads = otel.points("freshkeep.remote.reads")
    assert sum(remote_reads.values()) == 2


async def test_job_metrics(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    queue = MemoryJobQueue(poll_interval=0.02)

    async def job(ctx: JobContext, args: dict[str, Any]) -> None:
        return None

    queue.task("job", job)
    h.keeper.register(queue)
    await queue.enqueue("job", {})
    await queue.drain(10)
    await queue.aclose()
    jobs = otel.points("freshkeep.jobs")
    name = ("freshkeep.queue", queue.name)
    assert jobs[(("freshkeep.job.outcome", "done"), name)] == 1
    assert jobs[(("freshkeep.job.outcome", "enqueued"), name)] == 1


async def test_stale_serves_feed_the_age_histogram(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    await h.swr.get()
    h.revs.revisions["t:a"] = 1
    assert (await h.swr.get()).status == "stale"
    await h.swr.wait_idle()
    ages = otel.points("freshkeep.view.stale_served.age")
    assert ages[(("freshkeep.read.status", "stale"), ("freshkeep.view", "swr"))] == 1


async def test_close_restores_the_tracer_and_stops_the_metrics(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub
    before = tracing.tracer()
    assert before is otel.inst.tracer and tracing.on_read is not None
    await h.summary.get()
    assert otel.points("freshkeep.view.reads") != {}
    otel.exporter.clear()
    otel.inst.close()
    otel.inst.close()  # idempotent
    assert otel.inst.closed
    assert tracing.tracer() is tracing.NO_TRACER and tracing.on_read is None
    h.revs.revisions["t:a"] = 5
    assert (await h.summary.get()).status == "section"  # a build, now without a span
    assert otel.spans() == []
    assert otel.points("freshkeep.view.reads") == {}
    assert all(o is not otel.inst.observer for v in h.keeper.views.values() for o in v.observers)
    later = h.keeper.view("later", lambda ctx: {}, sources=["t:c"])
    assert otel.inst.observer not in later.observers


async def test_views_registered_after_instrument_are_observed(hub: tuple[Hub, Otel]) -> None:
    h, otel = hub

    async def build(ctx: BuildContext) -> dict[str, int]:
        return {}

    later = h.keeper.view("later", build, sources=["t:c"])
    await later.get()
    durations = otel.points("freshkeep.view.build.duration")
    assert durations[(("freshkeep.view", "later"), ("freshkeep.view.section", "default"))] == 1


async def test_the_docs_example_makes_the_spans_the_page_says() -> None:
    found = await run_block(python_block("observability.md", "otel-instrument"), {})
    spans = found["spans"]
    assert sorted((name, a.get("freshkeep.view.section")) for name, a in spans) == [
        ("freshkeep.view.build", None),
        ("freshkeep.view.section", "core"),
        ("freshkeep.view.section", "progress"),
    ]
    build = next(a for name, a in spans if name == "freshkeep.view.build")
    assert build["freshkeep.view.sections"] == 2 and build["freshkeep.view.outcome"] == "miss"
    assert tracing.tracer() is tracing.NO_TRACER  # the block closed it


def test_instrument_from_settings_follows_the_otel_setting() -> None:
    off = Keeper(MemoryRevisions())
    assert instrument_from_settings(off) is None
    assert tracing.tracer() is tracing.NO_TRACER
    on = Keeper(MemoryRevisions(), settings=Settings(otel=True))
    inst = instrument_from_settings(on, tracer_provider=TracerProvider(), meter_provider=None)
    try:
        assert inst is not None and inst.keeper is on
        assert isinstance(tracing.tracer(), OtelTracer)
    finally:
        assert inst is not None
        inst.close()
    assert tracing.tracer() is tracing.NO_TRACER


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "freshkeep.integrations.otel")
    with pytest.raises(MissingDependencyError, match=r"freshkeep\[otel\]"):
        importlib.import_module("freshkeep.integrations.otel")


async def test_concurrent_requests_share_one_build_span_and_each_gets_its_status(
    hub: tuple[Hub, Otel], client: httpx.AsyncClient
) -> None:
    h, otel = hub
    h.gate = asyncio.Event()
    requests = [asyncio.ensure_future(client.get("/summary")) for _ in range(8)]
    while h.summary.in_flight == 0:  # the first read started the build, which waits
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)  # let the other requests join it
    h.gate.set()
    responses = await asyncio.gather(*requests)
    assert all(r.status_code == 200 for r in responses)
    assert len(otel.spans("freshkeep.view.build")) == 1  # single-flight: one build
    by_id = {format(s.context.span_id, "016x"): s for s in otel.spans("GET /summary")}
    assert len(by_id) == 8
    for r in responses:  # each request's span says what its own response said
        span = by_id[r.headers["x-span"]]
        assert attrs(span)["freshkeep.read.status"] == r.headers["x-freshkeep-cache"]
