"""OpenTelemetry: spans for freshkeep's slow work, the read status on the request span, and
metrics through the OpenTelemetry API (an alternative to :mod:`~freshkeep.integrations.prometheus`).

One call::

    from freshkeep.integrations.otel import instrument

    otel = instrument(keeper)            # the global tracer and meter providers
    ...
    otel.close()                         # back to no spans and no metrics

Needs the ``otel`` extra (``opentelemetry-api``); an SDK, its exporters and, for request spans,
an ASGI instrumentation (``opentelemetry-instrumentation-asgi`` or ``-fastapi``) are the
application's choice.

**Spans** (:data:`freshkeep.core.tracing.SPANS`): builds of views and of each section, remote
fetches, job runs, processor runs and items, scheduled runs. A build that a background refresh
runs is a child of the span that was current when the read scheduled it.

**The read status**: :func:`~freshkeep.integrations.starlette.serve` sets
``freshkeep.read.status`` (``hit``, ``section``, ``stale``, ``miss``, ``error-stale``, or
``unavailable`` for a ``503``) and ``freshkeep.view`` on the current span, the request's own
when an ASGI instrumentation made one; no span is created for a read. With no span recording,
it costs one call; with this module not installed, one comparison.

**Metrics**: counters are observed from the keeper's snapshots when the meter collects (a hit
increments nothing, as with Prometheus); the two histograms are fed by a
:class:`~freshkeep.views.ViewObserver` after each build and stale serve. :data:`METRICS` lists
them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from freshkeep.core import tracing
from freshkeep.exceptions import missing_extra

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("otel", exc.name or "opentelemetry-api") from exc

if TYPE_CHECKING:
    from freshkeep.core.entry import Status
    from freshkeep.keeper import Keeper, KeeperSnapshot

SCOPE = "freshkeep"
"""The instrumentation scope of freshkeep's tracer and meter."""

READ_STATUS = "freshkeep.read.status"
"""The request span's attribute saying how a view answered."""
READ_VIEW = "freshkeep.view"
"""The request span's attribute naming the view read."""

METRICS: dict[str, str] = {
    "freshkeep.view.reads": "Reads of a view (freshkeep.view), by status (freshkeep.read.status).",
    "freshkeep.view.builds": "Builds of a section (freshkeep.view, freshkeep.view.section).",
    "freshkeep.view.build.errors": "Builds of a view that failed (freshkeep.view).",
    "freshkeep.view.build.duration": "Seconds a section took to build (histogram).",
    "freshkeep.view.stale_served.age": "Age of an entry served stale or on error (histogram).",
    "freshkeep.remote.reads": "Reads of a remote value (freshkeep.remote), by status.",
    "freshkeep.remote.fetches": "Fetches of a remote value (freshkeep.remote).",
    "freshkeep.remote.fetch.errors": "Fetches of a remote value that failed.",
    "freshkeep.jobs": "Jobs of a queue (freshkeep.queue) seen by this process, by outcome "
    "(freshkeep.job.outcome: enqueued, done, failed, retried, stalled).",
}
"""Every metric :func:`instrument` reports, with what it counts."""


class OtelTracer(tracing.Tracer):
    """A :class:`~freshkeep.core.tracing.Tracer` making OpenTelemetry spans."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = otel_trace.get_tracer(SCOPE, _version(), tracer_provider=tracer_provider)

    def span(
        self, name: str, attributes: tracing.Attributes
    ) -> AbstractContextManager[tracing.Span]:
        """A current span named ``name``; an exception leaving it is recorded on it."""
        return self.tracer.start_as_current_span(name, attributes=attributes)

    def read(self, view: str, status: str) -> None:
        """Set the read status and the view on the current span, if it records."""
        span = otel_trace.get_current_span()
        if span.is_recording():
            span.set_attributes({READ_STATUS: status, READ_VIEW: view})


class _Observer:
    """Feeds the histograms from views (a :class:`~freshkeep.views.ViewObserver`)."""

    def __init__(self, meter: Meter) -> None:
        self.build = meter.create_histogram(
            "freshkeep.view.build.duration",
            unit="s",
            description=METRICS["freshkeep.view.build.duration"],
        )
        self.stale = meter.create_histogram(
            "freshkeep.view.stale_served.age",
            unit="s",
            description=METRICS["freshkeep.view.stale_served.age"],
        )

    def build_finished(self, view: str, section: str, seconds: float) -> None:
        """Record a section's build time."""
        self.build.record(seconds, {"freshkeep.view": view, "freshkeep.view.section": section})

    def stale_served(self, view: str, status: Status, age: float) -> None:
        """Record the age of an entry served stale or on error."""
        self.stale.record(max(0.0, age), {"freshkeep.view": view, READ_STATUS: status})


Observe = Callable[["Keeper"], Iterator[Observation]]


@dataclass(eq=False)
class Instrumentation:
    """What :func:`instrument` installed; :meth:`close` removes it."""

    keeper: Keeper
    tracer: OtelTracer | None
    observer: _Observer | None
    _previous: tracing.Tracer | None = None
    _closed: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop the spans (the tracer installed before comes back, if this one is still
        installed), stop feeding the histograms, and observe no more counters."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.tracer is not None and tracing.tracer() is self.tracer:
            tracing.set_tracer(self._previous)
        if self.observer is not None:
            for observers in (
                self.keeper.view_observers,
                *(v.observers for v in self.keeper.views.values()),
            ):
                observers[:] = [o for o in observers if o is not self.observer]

    def _callback(self, observe: Observe) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if self._closed:
                return []
            return list(observe(self.keeper))

        return callback


def instrument(
    keeper: Keeper,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    traces: bool = True,
    metrics: bool = True,
) -> Instrumentation:
    """Make freshkeep's spans OpenTelemetry spans (``traces``; one tracer per process, see
    :mod:`freshkeep.core.tracing`) and report ``keeper``'s metrics through the OpenTelemetry
    metrics API (``metrics``). The providers default to the global ones
    (``opentelemetry.trace.set_tracer_provider``, ``opentelemetry.metrics.set_meter_provider``).
    """
    tracer = OtelTracer(tracer_provider) if traces else None
    observer = None
    meter = None
    if metrics:
        meter = otel_metrics.get_meter(SCOPE, _version(), meter_provider=meter_provider)
        observer = _Observer(meter)
    previous = tracing.set_tracer(tracer) if tracer is not None else None
    inst = Instrumentation(keeper, tracer, observer, previous)
    if meter is not None and observer is not None:
        _observe_counters(inst, meter)
        if all(o is not observer for o in keeper.view_observers):
            keeper.view_observers.append(observer)
        for view in keeper.views.values():
            view.observers.append(observer)
    return inst


def instrument_from_settings(
    keeper: Keeper,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Instrumentation | None:
    """:func:`instrument` when the keeper's settings ask for it (``otel``, the environment's
    ``FRESHKEEP_OTEL=1``); else ``None``."""
    if not keeper.settings.otel:
        return None
    return instrument(keeper, tracer_provider=tracer_provider, meter_provider=meter_provider)


def _observe_counters(inst: Instrumentation, meter: Meter) -> None:
    for name, observe, unit in (
        ("freshkeep.view.reads", _view_reads, "{read}"),
        ("freshkeep.view.builds", _view_builds, "{build}"),
        ("freshkeep.view.build.errors", _view_errors, "{build}"),
        ("freshkeep.remote.reads", _remote_reads, "{read}"),
        ("freshkeep.remote.fetches", _remote_fetches, "{fetch}"),
        ("freshkeep.remote.fetch.errors", _remote_errors, "{fetch}"),
        ("freshkeep.jobs", _jobs, "{job}"),
    ):
        meter.create_observable_counter(
            name, callbacks=[inst._callback(observe)], unit=unit, description=METRICS[name]
        )


def _view_reads(keeper: Keeper) -> Iterator[Observation]:
    s = _snapshot(keeper)
    for name, v in s.views.items():
        for status, n in sorted(v.reads.items()):
            yield Observation(n, {"freshkeep.view": name, READ_STATUS: status})


def _view_builds(keeper: Keeper) -> Iterator[Observation]:
    s = _snapshot(keeper)
    for name, v in s.views.items():
        for section, n in sorted(v.builds.items()):
            yield Observation(n, {"freshkeep.view": name, "freshkeep.view.section": section})


def _view_errors(keeper: Keeper) -> Iterator[Observation]:
    s = _snapshot(keeper)
    for name, v in s.views.items():
        yield Observation(v.build_errors, {"freshkeep.view": name})


def _remote_reads(keeper: Keeper) -> Iterator[Observation]:
    s = _snapshot(keeper)
    for name, r in s.remotes.items():
        for status, n in sorted(r.reads.items()):
            yield Observation(n, {"freshkeep.remote": name, READ_STATUS: status})


def _remote_fetches(keeper: Keeper) -> Iterator[Observation]:
    s = _snapshot(keeper)
    for name, r in s.remotes.items():
        yield Observation(r.fetches, {"freshkeep.remote": name})


def _remote_errors(keeper: Keeper) -> Iterator[Observation]:
    s = _snapshot(keeper)
    for name, r in s.remotes.items():
        yield Observation(r.fetch_errors, {"freshkeep.remote": name})


def _jobs(keeper: Keeper) -> Iterator[Observation]:
    for name, queue in list(keeper.jobs.items()):
        q = queue.snapshot()
        for outcome, n in (
            ("enqueued", q.enqueued),
            ("done", q.done),
            ("failed", q.failed),
            ("retried", q.retried),
            ("stalled", q.stalled),
        ):
            yield Observation(n, {"freshkeep.queue": name, "freshkeep.job.outcome": outcome})


def _snapshot(keeper: Keeper) -> KeeperSnapshot:
    # A periodic reader collects in its own thread: a dict may change size under it while the
    # event loop registers something; read again.
    for attempt in range(3):
        try:
            return keeper.snapshot()
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _version() -> str:
    from freshkeep import __version__

    return __version__


__all__ = [
    "METRICS",
    "READ_STATUS",
    "READ_VIEW",
    "SCOPE",
    "Instrumentation",
    "OtelTracer",
    "instrument",
    "instrument_from_settings",
]
