"""Prometheus metrics of a keeper, at no cost to the hit path.

A hit costs a few dict lookups; incrementing a labelled Prometheus counter on it would cost
more than the hit itself. So the counters are not incremented where things happen: the
keeper, its views, remotes, notifiers, artifact caches and processors already count what they
do, and :class:`FreshkeepCollector` reads those counters when Prometheus scrapes. Only two
slow-path observations are real histograms, fed by a :class:`~freshkeep.views.ViewObserver`
that views call after a build and when they serve a stale entry (never on a hit).

Use::

    metrics = instrument(keeper)              # a CollectorRegistry of its own
    app.add_route("/metrics", metrics_app(keeper, metrics=metrics))

or just ``app.add_route("/metrics", metrics_app(keeper))``. Every metric is listed in
``docs/health.md``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from freshkeep.core.auth import bearer_ok
from freshkeep.exceptions import ConfigurationError, missing_extra
from freshkeep.integrations.dashboard_sources import artifact_caches, watched_pipelines

try:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("prometheus", exc.name or "prometheus_client") from exc

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactSnapshot
    from freshkeep.core.entry import Status
    from freshkeep.health import Health
    from freshkeep.jobs import JobQueueSnapshot
    from freshkeep.keeper import Keeper, KeeperSnapshot
    from freshkeep.notify import NotifierSnapshot
    from freshkeep.processing import Pipeline, PipelineSnapshot
    from freshkeep.remote import RemoteSnapshot
    from freshkeep.views import ViewSnapshot

log = logging.getLogger("freshkeep.metrics")

BUILD_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Buckets (seconds) of ``freshkeep_view_build_duration_seconds``."""

STALE_BUCKETS: tuple[float, ...] = (
    0.01,
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
    3600.0,
)
"""Buckets (seconds) of ``freshkeep_view_stale_served_age_seconds``."""

PROCESSOR_OUTCOMES = ("skipped", "unchanged", "deferred", "processed", "failed")
"""The outcomes of the items of a processor run (see :class:`~freshkeep.processing.RunStats`)."""

NOTIFICATION_OUTCOMES = ("sent", "deduped", "skipped", "pending", "baseline", "failed")
"""The outcomes of a notifier's observations counted by ``freshkeep_notifications_total``."""

ARTIFACT_OUTCOMES = ("built", "skipped", "failed")
"""Outcomes of artifact builds counted by ``freshkeep_artifact_builds_total``."""

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The content type of the Prometheus text format (0.0.4), served to a scraper that asks for
no other (an ``Accept`` header may ask for OpenMetrics or text format 1.0.0)."""

Pipelines = Callable[[], Iterable["Pipeline"]]


_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class _Observer:
    """Feeds the two slow-path histograms from views (a :class:`~freshkeep.views.ViewObserver`)."""

    def __init__(self, build: Histogram, stale: Histogram) -> None:
        self._build = build
        self._stale = stale

    def build_finished(self, view: str, section: str, seconds: float) -> None:
        """Observe a section's build time."""
        self._build.labels(view, section).observe(seconds)

    def stale_served(self, view: str, status: Status, age: float) -> None:
        """Observe the age of an entry served stale or on error."""
        self._stale.labels(view, status).observe(max(0.0, age))


class FreshkeepCollector(Collector):
    """A Prometheus collector that reads a keeper's counters at scrape time.

    ``pipelines``: the processing pipelines to report (or a callable returning them at each
    scrape); the pipelines registered on the keeper (``keeper.pipelines``) are added.
    ``namespace`` prefixes every metric name. Every view, those registered later included, is
    observed (build time, staleness served) from construction on, until :meth:`detach`.
    """

    def __init__(
        self,
        keeper: Keeper,
        *,
        pipelines: Iterable[Pipeline] | Pipelines = (),
        namespace: str = "freshkeep",
        build_buckets: Sequence[float] = BUILD_BUCKETS,
        stale_buckets: Sequence[float] = STALE_BUCKETS,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"a metric namespace must match [a-zA-Z_][a-zA-Z0-9_]*, not {namespace!r}"
            )
        self.keeper = keeper
        self.namespace = namespace
        self._pipelines: Pipelines = pipelines if callable(pipelines) else _fixed(tuple(pipelines))
        self.build_duration = Histogram(
            "view_build_duration_seconds",
            "Seconds a section of a view took to build (misses, section rebuilds, refreshes).",
            ("view", "section"),
            namespace=namespace,
            buckets=tuple(build_buckets),
            registry=None,
        )
        self.stale_age = Histogram(
            "view_stale_served_age_seconds",
            "Age of an entry served stale or on error: seconds since it was last known to "
            "match its sources.",
            ("view", "status"),
            namespace=namespace,
            buckets=tuple(stale_buckets),
            registry=None,
        )
        self.observer = _Observer(self.build_duration, self.stale_age)
        self._lock = threading.Lock()
        self.attach()

    def attach(self) -> None:
        """Observe every view of the keeper, and those it registers later (idempotent)."""
        with self._lock:
            if all(o is not self.observer for o in self.keeper.view_observers):
                self.keeper.view_observers.append(self.observer)
            for view in self.keeper.views.values():
                if all(o is not self.observer for o in view.observers):
                    view.observers.append(self.observer)

    def detach(self) -> None:
        """Stop observing the keeper's views."""
        with self._lock:
            for observers in (
                self.keeper.view_observers,
                *(v.observers for v in self.keeper.views.values()),
            ):
                observers[:] = [o for o in observers if o is not self.observer]

    def pipelines(self) -> list[Pipeline]:
        """The pipelines reported: those given, then those registered on the keeper (which
        includes those its health registry watches)."""
        found: list[Pipeline] = list(self._pipelines())
        found += [p for p in watched_pipelines(self.keeper) if all(p is not q for q in found)]
        return found

    def describe(self) -> Iterable[Metric]:
        """The metric families (a registry uses their names to refuse duplicates)."""
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        """Every metric family, read from the keeper's snapshot now."""
        m = _Families(self.namespace)
        snap = self._snapshot()
        yield from self._keeper_metrics(m, snap)
        yield from self._view_metrics(m, snap.views)
        yield from self.build_duration.collect()
        yield from self.stale_age.collect()
        yield from self._remote_metrics(m, snap.remotes)
        yield from self._notifier_metrics(m, snap.notifiers)
        yield from self._artifact_metrics(m, snap.artifacts)
        yield from self._processor_metrics(m, [p.snapshot() for p in self.pipelines()])
        yield from self._job_metrics(m, {n: q.snapshot() for n, q in self.keeper.jobs.items()})
        yield from self._health_metrics(m, self.keeper.health)

    def _snapshot(self) -> KeeperSnapshot:
        # A scrape served from another thread (prometheus_client's own HTTP server) may see a
        # dict change size under it while the event loop registers something: read again.
        for attempt in range(3):
            try:
                return self.keeper.snapshot()
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- families -------------------------------------------------------------------------

    @staticmethod
    def _keeper_metrics(m: _Families, s: KeeperSnapshot) -> Iterator[Metric]:
        yield m.counter("commits", "Commits of this process applied to the keeper.", s.commits)
        yield m.counter(
            "bus_revisions",
            "Messages of revisions received from other instances through the bus.",
            s.remote_revisions,
        )
        yield m.counter("revision_probes", "Reads of source revisions.", s.probes)
        yield m.counter("probe_errors", "Reads whose revision probe failed.", s.probe_errors)
        store = s.store
        yield m.gauge("store_entries", "Entries in the memory store.", store.entries)
        yield m.gauge("store_bytes", "Bytes of entries in the memory store.", store.bytes)
        yield m.counter(
            "store_evictions", "Entries evicted from the memory store.", store.evictions
        )
        yield m.counter(
            "store_rejected",
            "Puts the memory store refused because its entry was built from newer revisions.",
            store.rejected,
        )
        yield m.gauge(
            "bus_up",
            "1 while revisions are pushed by the bus, 0 during an outage.",
            0 if s.bus_down else 1,
        )
        if s.shared is not None:
            yield m.gauge(
                "shared_store_up",
                "1 while the shared store is reachable, 0 during an outage.",
                1 if s.shared.reachable else 0,
            )

    @staticmethod
    def _view_metrics(m: _Families, stats: Mapping[str, ViewSnapshot]) -> Iterator[Metric]:
        reads = m.counter_family("view_reads", "Reads of a view, by status.", ("view", "status"))
        builds = m.counter_family(
            "view_builds", "Builds of a section of a view.", ("view", "section")
        )
        errors = m.counter_family("view_build_errors", "Builds of a view that failed.", ("view",))
        refreshes = m.counter_family(
            "view_background_refreshes",
            "Background refreshes started (stale-while-revalidate).",
            ("view",),
        )
        collapsed = m.counter_family(
            "view_collapsed_reads", "Reads that waited on a build another read started.", ("view",)
        )
        shared_hits = m.counter_family(
            "view_shared_hits",
            "Builds answered from the shared store (another instance built it).",
            ("view",),
        )
        shared_waits = m.counter_family(
            "view_shared_waits",
            "Builds that waited for another instance holding the build lock.",
            ("view",),
        )
        in_flight = m.gauge_family("view_builds_in_flight", "Builds running now.", ("view",))
        last_build = m.gauge_family(
            "view_last_build_timestamp_seconds",
            "Wall-clock time of the view's last successful build.",
            ("view",),
        )
        for name, s in stats.items():
            for status, n in sorted(s.reads.items()):
                reads.add_metric([name, status], n)
            for section, n in sorted(s.builds.items()):
                builds.add_metric([name, section], n)
            errors.add_metric([name], s.build_errors)
            refreshes.add_metric([name], s.background_refreshes)
            collapsed.add_metric([name], s.collapsed)
            shared_hits.add_metric([name], s.shared_hits)
            shared_waits.add_metric([name], s.shared_waits)
            in_flight.add_metric([name], s.in_flight)
            if s.last_build_at is not None:
                last_build.add_metric([name], s.last_build_at)
        yield from (reads, builds, errors, refreshes, collapsed, shared_hits, shared_waits)
        yield from (in_flight, last_build)

    @staticmethod
    def _remote_metrics(m: _Families, stats: Mapping[str, RemoteSnapshot]) -> Iterator[Metric]:
        reads = m.counter_family(
            "remote_reads", "Reads of a remote value, by status.", ("remote", "status")
        )
        fetches = m.counter_family("remote_fetches", "Fetches of a remote value.", ("remote",))
        failures = m.counter_family(
            "remote_fetch_errors", "Fetches of a remote value that failed.", ("remote",)
        )
        keys = m.gauge_family("remote_keys", "Keys a remote holds a value for.", ("remote",))
        failing = m.gauge_family(
            "remote_failing_keys", "Keys whose last fetch failed.", ("remote",)
        )
        max_age = m.gauge_family(
            "remote_max_age_seconds", "Age of the oldest value a remote holds.", ("remote",)
        )
        for name, s in stats.items():
            for status, n in sorted(s.reads.items()):
                reads.add_metric([name, status], n)
            fetches.add_metric([name], s.fetches)
            failures.add_metric([name], s.fetch_errors)
            keys.add_metric([name], s.keys)
            failing.add_metric([name], s.failing)
            if s.max_age is not None:
                max_age.add_metric([name], s.max_age)
        yield from (reads, fetches, failures, keys, failing, max_age)

    @staticmethod
    def _notifier_metrics(m: _Families, stats: Mapping[str, NotifierSnapshot]) -> Iterator[Metric]:
        outcomes = m.counter_family(
            "notifications",
            "Observations of a notifier by outcome: sent, deduped (no change), skipped "
            "(terminal state), pending (awaiting confirmation), baseline (first state recorded "
            "without notice), failed (send raised).",
            ("notifier", "outcome"),
        )
        recovered = m.counter_family(
            "notifications_recovered",
            "Notifications of kind recovered (also counted as sent).",
            ("notifier",),
        )
        store_errors = m.counter_family(
            "notifier_store_errors",
            "Failed reads or writes of a notifier's state store.",
            ("notifier",),
        )
        for name, s in stats.items():
            by_outcome = {
                "sent": s.sent,
                "deduped": s.deduped,
                "skipped": s.skipped,
                "pending": s.pending,
                "baseline": s.baseline,
                "failed": s.failed,
            }
            for outcome in NOTIFICATION_OUTCOMES:
                outcomes.add_metric([name, outcome], by_outcome[outcome])
            recovered.add_metric([name], s.recovered)
            store_errors.add_metric([name], s.store_errors)
        yield from (outcomes, recovered, store_errors)

    @staticmethod
    def _artifact_metrics(m: _Families, caches: Mapping[str, ArtifactSnapshot]) -> Iterator[Metric]:
        builds = m.counter_family(
            "artifact_builds",
            "Artifact builds by outcome: built, skipped (a prebuild found it fresh), failed.",
            ("cache", "outcome"),
        )
        reads = m.counter_family(
            "artifact_reads",
            "Artifact reads by result: hit (fresh), miss (built), stale (last good served "
            "after a failed build), unavailable (failed, nothing within bounds).",
            ("cache", "result"),
        )
        gc_runs = m.counter_family("artifact_gc_runs", "Garbage collections run.", ("cache",))
        gc_deleted = m.counter_family(
            "artifact_gc_deleted",
            "What garbage collection deleted, by kind: rows, objects, orphans, temp_files.",
            ("cache", "kind"),
        )
        in_flight = m.gauge_family("artifact_builds_in_flight", "Builds running now.", ("cache",))
        pending = m.gauge_family(
            "artifact_prebuilds_pending", "Prebuilds enqueued and not built yet.", ("cache",)
        )
        failing = m.gauge_family(
            "artifact_failing_keys", "Keys whose last build failed.", ("cache",)
        )
        for name, s in caches.items():
            by_outcome = {"built": s.built, "skipped": s.skipped, "failed": s.failed}
            for outcome in ARTIFACT_OUTCOMES:
                builds.add_metric([name, outcome], by_outcome[outcome])
            for result, value in (
                ("hit", s.hits),
                ("miss", s.misses),
                ("stale", s.stale_served),
                ("unavailable", s.unavailable),
            ):
                reads.add_metric([name, result], value)
            gc_runs.add_metric([name], s.gc_runs)
            for kind, value in (
                ("rows", s.gc_rows),
                ("objects", s.gc_objects),
                ("orphans", s.gc_orphans),
                ("temp_files", s.gc_temp_files),
            ):
                gc_deleted.add_metric([name, kind], value)
            in_flight.add_metric([name], s.in_flight)
            pending.add_metric([name], s.pending)
            failing.add_metric([name], s.failing_keys)
        yield from (builds, reads, gc_runs, gc_deleted, in_flight, pending, failing)

    @staticmethod
    def _processor_metrics(m: _Families, pipelines: Sequence[PipelineSnapshot]) -> Iterator[Metric]:
        running = m.gauge_family(
            "processor_running", "1 while a run of the processor is going on.", ("processor",)
        )
        items = m.gauge_family(
            "processor_last_run_items",
            "Items of the processor's last completed run, by outcome.",
            ("processor", "outcome"),
        )
        finished = m.gauge_family(
            "processor_last_run_timestamp_seconds",
            "Wall-clock time the processor's last completed run started.",
            ("processor",),
        )
        duration = m.gauge_family(
            "processor_last_run_duration_seconds",
            "Seconds the processor's last completed run took.",
            ("processor",),
        )
        seen: set[str] = set()
        for pipeline in pipelines:
            for name in pipeline.processors:
                if name in seen:
                    continue
                seen.add(name)
                running.add_metric([name], 1 if name in pipeline.running else 0)
                last = pipeline.last_runs.get(name)
                if last is None:
                    continue
                by_outcome = {
                    "skipped": last.skipped,
                    "unchanged": last.unchanged,
                    "deferred": last.deferred,
                    "processed": last.processed,
                    "failed": last.failed,
                }
                for outcome in PROCESSOR_OUTCOMES:
                    items.add_metric([name, outcome], by_outcome[outcome])
                finished.add_metric([name], last.started_at)
                duration.add_metric([name], last.duration)
        yield from (running, items, finished, duration)

    @staticmethod
    def _job_metrics(m: _Families, queues: Mapping[str, JobQueueSnapshot]) -> Iterator[Metric]:
        jobs = m.counter_family(
            "jobs",
            "Jobs of a queue seen by this process's workers, by outcome: enqueued, done, "
            "failed (every retry spent), retried, stalled (its worker stopped renewing it).",
            ("queue", "outcome"),
        )
        skipped = m.counter_family(
            "jobs_skipped",
            "Enqueues and periodic ticks skipped, by reason (deduplicated, in_flight, locked, "
            "misfire, tick_taken, superseded).",
            ("queue", "reason"),
        )
        size = m.gauge_family(
            "job_queue_jobs",
            "Jobs queued or running on every instance, as of the queue's last count.",
            ("queue", "state"),
        )
        for name, q in queues.items():
            for outcome, n in (
                ("enqueued", q.enqueued),
                ("done", q.done),
                ("failed", q.failed),
                ("retried", q.retried),
                ("stalled", q.stalled),
            ):
                jobs.add_metric([name, outcome], n)
            for reason, n in sorted(q.skipped.items()):
                skipped.add_metric([name, reason], n)
            size.add_metric([name, "queued"], q.queued)
            size.add_metric([name, "running"], q.running)
        yield from (jobs, skipped, size)

    @staticmethod
    def _health_metrics(m: _Families, health: Health) -> Iterator[Metric]:
        report = health.last_report
        if report is None:
            return
        yield m.gauge(
            "health_status",
            "Headline of the last health run: 0 ok, 1 degraded, 2 unhealthy.",
            HEALTH_STATUS.get(report.status, 2),
        )
        yield m.gauge(
            "health_last_run_timestamp_seconds",
            "Wall-clock time of the last health run.",
            report.generated_at,
        )
        levels = m.gauge_family(
            "health_check_level",
            "Level of each check in the last health run: 0 ok, 1 info, 2 warning, 3 error.",
            ("check",),
        )
        lag = m.gauge_family(
            "processor_lag_seconds",
            "How long changed items have waited for the processor, as of the last health run.",
            ("processor",),
        )
        for check in report.checks:
            levels.add_metric([check.name], HEALTH_LEVELS.get(str(check.level), 3))
            data = check.data
            if (
                check.name == f"processor:{data.get('processor')}"
                and isinstance(value := data.get("lag"), int | float)
                and not isinstance(value, bool)
            ):
                lag.add_metric([str(data["processor"])], value)
        yield from (levels, lag)


HEALTH_STATUS = {"ok": 0, "degraded": 1, "unhealthy": 2}
"""The value of ``freshkeep_health_status`` for each headline."""

HEALTH_LEVELS = {"ok": 0, "info": 1, "warning": 2, "error": 3}
"""The value of ``freshkeep_health_check_level`` for each level."""


@dataclass(frozen=True, slots=True)
class _Families:
    namespace: str

    def _name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(self._name(name), doc, value=value)

    def gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name(name), doc, value=value)

    def counter_family(self, name: str, doc: str, labels: Sequence[str]) -> CounterMetricFamily:
        return CounterMetricFamily(self._name(name), doc, labels=labels)

    def gauge_family(self, name: str, doc: str, labels: Sequence[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name(name), doc, labels=labels)


def _fixed(pipelines: tuple[Pipeline, ...]) -> Pipelines:
    return lambda: pipelines


@dataclass(eq=False)
class Metrics:
    """A keeper's metrics: the registry and the collector registered in it."""

    keeper: Keeper
    registry: CollectorRegistry
    collector: FreshkeepCollector
    _closed: bool = field(default=False, repr=False)

    def render(self, accept: str = "") -> bytes:
        """The metrics in the format an ``Accept`` header asks for (default: the Prometheus
        text format, :data:`CONTENT_TYPE`)."""
        return self.encode(accept)[0]

    def encode(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics and their content type, negotiated from an ``Accept`` header."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def close(self) -> None:
        """Unregister the collector and stop observing the views."""
        if not self._closed:
            self._closed = True
            self.collector.detach()
            self.registry.unregister(self.collector)


def instrument(
    keeper: Keeper,
    *,
    registry: CollectorRegistry | None = None,
    pipelines: Iterable[Pipeline] | Pipelines = (),
    namespace: str = "freshkeep",
) -> Metrics:
    """Register a :class:`FreshkeepCollector` of ``keeper`` in ``registry`` (default: a new
    :class:`~prometheus_client.CollectorRegistry` of its own, so several keepers or apps in a
    process never collide; pass ``prometheus_client.REGISTRY`` to expose them with the
    process's default metrics). Raises ``ValueError`` when ``registry`` already holds metrics
    of the same names (e.g. another keeper's: give it another ``namespace``)."""
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
    collector = FreshkeepCollector(keeper, pipelines=pipelines, namespace=namespace)
    try:
        registry.register(collector)
    except ValueError:
        collector.detach()
        raise
    return Metrics(keeper, registry, collector)


class MetricsApp:
    """An ASGI application answering ``GET`` (and ``HEAD``) with the metrics of a keeper.

    Add it as a route (``app.add_route("/metrics", MetricsApp(metrics))``) or mount it.
    With ``token``, a request must carry ``Authorization: Bearer <token>`` (401 otherwise).
    """

    def __init__(self, metrics: Metrics, *, token: str | None = None) -> None:
        self.metrics = metrics
        self._token = token.encode() if token else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one request."""
        if scope["type"] != "http":  # lifespan or websocket: nothing to do here
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
            return
        if self._token is not None and not _bearer_ok(scope, self._token):
            await _respond(
                send, 401, b"a valid bearer token is required\n", [(b"www-authenticate", b"Bearer")]
            )
            return
        accept = b", ".join(v for k, v in scope.get("headers", ()) if k == b"accept")
        body, content_type = self.metrics.encode(accept.decode("latin-1"))
        headers = [
            (b"content-type", content_type.encode()),
            (b"cache-control", b"no-store"),
        ]
        await _respond(send, 200, b"" if method == "HEAD" else body, headers, length=len(body))


def metrics_app(
    keeper: Keeper,
    *,
    registry: CollectorRegistry | None = None,
    metrics: Metrics | None = None,
    pipelines: Iterable[Pipeline] | Pipelines = (),
    token: str | None = None,
) -> MetricsApp:
    """An ASGI app serving ``keeper``'s metrics (see :class:`MetricsApp`).

    Pass ``metrics`` from :func:`instrument`, or let it instrument ``keeper`` into
    ``registry`` (default: a registry of its own) with ``pipelines``.
    """
    if metrics is None:
        metrics = instrument(keeper, registry=registry, pipelines=pipelines)
    elif metrics.keeper is not keeper:
        raise ConfigurationError("metrics_app(): metrics= belongs to another keeper")
    return MetricsApp(metrics, token=token)


def _bearer_ok(scope: Mapping[str, Any], token: bytes) -> bool:
    given = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
    return bearer_ok(given, token)


async def _respond(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    length: int | None = None,
) -> None:
    if not any(k == b"content-type" for k, _ in headers):
        headers = [*headers, (b"content-type", b"text/plain; charset=utf-8")]
    headers = [*headers, (b"content-length", str(len(body) if length is None else length).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = [
    "ARTIFACT_OUTCOMES",
    "BUILD_BUCKETS",
    "CONTENT_TYPE",
    "HEALTH_LEVELS",
    "HEALTH_STATUS",
    "NOTIFICATION_OUTCOMES",
    "PROCESSOR_OUTCOMES",
    "STALE_BUCKETS",
    "FreshkeepCollector",
    "Metrics",
    "MetricsApp",
    "artifact_caches",
    "instrument",
    "metrics_app",
    "watched_pipelines",
]
