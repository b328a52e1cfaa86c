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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from freshkeep.core.auth import bearer_ok
from freshkeep.exceptions import ConfigurationError, missing_extra
from freshkeep.integrations._prometheus_families import (
    ARTIFACT_OUTCOMES,
    HEALTH_LEVELS,
    HEALTH_STATUS,
    NOTIFICATION_OUTCOMES,
    PROCESSOR_OUTCOMES,
    CollectorFamilies,
    _Families,
)
from freshkeep.integrations.dashboard_sources import artifact_caches, watched_pipelines

try:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.core import Metric
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("prometheus", exc.name or "prometheus_client") from exc

if TYPE_CHECKING:
    from freshkeep.core.entry import Status
    from freshkeep.keeper import Keeper, KeeperSnapshot
    from freshkeep.processing import Pipeline

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


class FreshkeepCollector(CollectorFamilies, Collector):
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
