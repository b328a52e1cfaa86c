"""The instrumentation port: spans around slow work, and the status of a read.

The shapes (views, remotes, jobs, processors, the scheduler) mark their slow work with
:func:`span` and do not know who listens: by default nobody, and a span costs one call that
returns a shared do-nothing context manager. :func:`freshkeep.integrations.otel.instrument`
installs a :class:`Tracer` that makes them OpenTelemetry spans; a test or another tracing
library may install its own with :func:`set_tracer`.

The tracer is one per process, as OpenTelemetry's own providers are: a processor or a job
queue runs without a keeper, and its spans belong to the process.

Span names and attributes (the :data:`SPANS` table is the reference):

- ``freshkeep.view.build``: one build of a view's entry (``freshkeep.view``,
  ``freshkeep.view.sections``: how many sections it builds); a build answered from the
  shared store says ``freshkeep.view.shared_hit``;
- ``freshkeep.view.section``: one section's builder (``freshkeep.view``,
  ``freshkeep.view.section``);
- ``freshkeep.remote.fetch``: one fetch of a remote value (``freshkeep.remote``);
- ``freshkeep.job.run``: one run of a job (``freshkeep.job.task``, ``freshkeep.job.id``,
  ``freshkeep.job.attempt``);
- ``freshkeep.processor.run``: one run of a processor (``freshkeep.processor``, then its counts
  ``freshkeep.processor.scanned``, ``.processed``, ``.failed``, ``.skipped``,
  ``.unchanged``);
- ``freshkeep.processor.item``: one item a processor processes (``freshkeep.processor``,
  ``freshkeep.item``);
- ``freshkeep.scheduler.run``: one run of a scheduled job (``freshkeep.scheduler.job``).

The status of a view's read is not a span: :func:`~freshkeep.integrations.starlette.serve`
calls the tracer's :meth:`Tracer.read` (through :data:`on_read`, ``None`` while no tracer is
installed, so the hit path pays one comparison), which sets it on the request's own span.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

from freshkeep.exceptions import ConfigurationError

AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue]

SPANS: Mapping[str, str] = {
    "freshkeep.view.build": "one build of a view's entry",
    "freshkeep.view.section": "one section's builder",
    "freshkeep.remote.fetch": "one fetch of a remote value",
    "freshkeep.job.run": "one run of a job",
    "freshkeep.processor.run": "one run of a processor",
    "freshkeep.processor.item": "one item a processor processes",
    "freshkeep.scheduler.run": "one run of a scheduled job",
}
"""Every span name freshkeep starts, with what it covers."""


class Span(Protocol):
    """What the code inside a span may do with it."""

    def set_attribute(self, key: str, value: AttributeValue) -> object:
        """Set one attribute of the span."""
        ...


class _NoSpan:
    """The span and context manager of the no-op tracer: shared, stateless."""

    __slots__ = ()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Do nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


_NO_SPAN = _NoSpan()


class Tracer:
    """The port: a base whose methods do nothing. Subclass it and :func:`set_tracer`."""

    def span(self, name: str, attributes: Attributes) -> AbstractContextManager[Span]:
        """A context manager around slow work named ``name`` (one of :data:`SPANS`); it
        yields the span, and an exception leaving it marks the span failed."""
        return _NO_SPAN

    def read(self, view: str, status: str) -> None:
        """Say that the current request read ``view`` with ``status`` (``hit``, ``section``,
        ``stale``, ``miss``, ``error-stale``). Called only while installed."""


NO_TRACER = Tracer()
"""The default tracer: no spans, no read statuses."""

_tracer: Tracer = NO_TRACER

on_read: Callable[[str, str], None] | None = None
"""The installed tracer's :meth:`Tracer.read`, or ``None`` when the default is installed."""


def tracer() -> Tracer:
    """The tracer installed in this process."""
    return _tracer


def set_tracer(new: Tracer | None) -> Tracer:
    """Install ``new`` (``None``: the no-op default) and return the one it replaces."""
    global _tracer, on_read
    if new is not None and not isinstance(new, Tracer):
        raise ConfigurationError(f"a tracer must subclass freshkeep.core.tracing.Tracer: {new!r}")
    previous = _tracer
    _tracer = NO_TRACER if new is None else new
    on_read = None if _tracer is NO_TRACER else _tracer.read
    return previous


def span(name: str, attributes: Attributes) -> AbstractContextManager[Span]:
    """A span of the installed tracer (see :meth:`Tracer.span`)."""
    return _tracer.span(name, attributes)


__all__ = [
    "NO_TRACER",
    "SPANS",
    "AttributeValue",
    "Attributes",
    "Span",
    "Tracer",
    "on_read",
    "set_tracer",
    "span",
    "tracer",
]
