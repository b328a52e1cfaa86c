"""The value types of :mod:`freshkeep.views`: what a builder is told, a section, the observer
of slow-path events, and a view's counters and snapshot (re-exported there)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from freshkeep.core.changes import Change
from freshkeep.core.component import Snapshot
from freshkeep.core.entry import Status
from freshkeep.core.partitions import Partitioned
from freshkeep.core.policy import Policy
from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

Probe = Literal["always", "interval"]

ClientRefresh = Literal["limited", "any", "authorized", "never"]
"""Who may force a rebuild over HTTP: see :meth:`View.may_force`."""
CLIENT_REFRESH: tuple[ClientRefresh, ...] = ("limited", "any", "authorized", "never")

STATUSES: tuple[Status, ...] = ("hit", "section", "stale", "miss", "error-stale")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_labels(labels: Mapping[str, str], what: str) -> dict[str, str]:
    """``labels`` (status -> the word a status header says instead), checked: every key a
    status, every value an HTTP token (letters, digits, ``-._~!#$%&'*+^`|``)."""
    out: dict[str, str] = {}
    for status, label in labels.items():
        if status not in STATUSES:
            raise ConfigurationError(
                f"{what}: {status!r} is not a read status (one of {', '.join(STATUSES)})"
            )
        if not isinstance(label, str) or not _TOKEN.match(label):
            raise ConfigurationError(
                f"{what}: the label of {status!r} must be a non-empty HTTP token (letters, "
                f"digits, '-', '_', '.'), not {label!r}"
            )
        out[status] = label
    return out


Learn = Callable[[tuple[str, ...]], Awaitable[Mapping[str, Revision]]]
"""Registers sources with the keeper and returns their revisions (read first when new)."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a builder is told about the build it runs."""

    view: str
    section: str
    key: Any
    principal: str | None
    revisions: Mapping[str, Revision]
    """The revisions of the section's sources, read before the builder was called."""
    learn: Learn | None = field(default=None, repr=False, compare=False)
    found: dict[str, Revision] = field(default_factory=dict, repr=False, compare=False)
    """The sources :meth:`depend` added, with their revisions."""
    session: AsyncSession | None = field(default=None, repr=False, compare=False)
    """For a view built on a read replica (``keeper.view(..., replica=...)``): a session in
    the ``REPEATABLE READ`` snapshot :attr:`revisions` were read in. Read the section's data
    through it, so the entry is labelled with the revisions of the data it holds. ``None``
    for other views."""

    async def depend(self, *sources: str) -> Mapping[str, Revision]:
        """Add ``sources`` to what this section depends on, found while building (e.g. the
        partitions of the rows a first query returned: ``await ctx.depend(*tasks.of(*ids))``).

        Call it **before** reading the data those sources cover: their revisions are taken
        now (read from the database first when the keeper did not know them yet), so a write
        that lands after this call invalidates the entry. Returns their revisions.
        """
        for s in sources:
            if not isinstance(s, str) or not s:
                raise ConfigurationError(f"a source must be a non-empty string, not {s!r}")
        new = tuple(sorted({s for s in sources if s not in self.revisions}))
        if not new:
            return {s: self.revisions[s] for s in sources}
        if self.learn is None:
            raise ConfigurationError("this build context cannot add sources")
        revs = await self.learn(new)
        self.found.update(revs)
        return {s: self.revisions.get(s, self.found.get(s, 0)) for s in sources}


Builder = Callable[[BuildContext], Awaitable[Any]]
"""``async def build(ctx) -> value``: a JSON-encodable value (or pre-encoded ``bytes``)."""


Apply = Callable[[Any, Sequence[Change]], Any]
"""``apply(value, changes) -> value``: a section's current (decoded) value with the rows
committed transactions changed applied, in commit order; may be ``async``. It may mutate and
return ``value`` (a copy decoded for it). Raise :class:`~freshkeep.core.changes.Rebuild` when
a change cannot be applied exactly."""

SourcesOf = Callable[[Any], Iterable[str]]
"""The sources of a key: ``key -> source names`` (e.g. ``lambda key: orders.of(key)``)."""


@dataclass(frozen=True, slots=True, init=False)
class Section:
    """A named part of a view's value with its own sources and builder.

    ``sources`` are source names, and :class:`~freshkeep.core.partitions.Partitioned` sources
    (``table_source(Order, by="customer_id")``): such a section depends only on the partition
    of the view's key (``view.get(key)``), so a write for another key leaves its entry valid.
    ``sources`` may also be a callable of the key returning source names, for a key that is
    not itself the partition value (``lambda key: orders.of(key[0])``). Sources a builder
    finds while it runs are added with :meth:`BuildContext.depend`.

    ``policy`` overrides the view's policy for this section: e.g. a ``strict`` section is
    rebuilt in line when it changes, while the view's other sections are served
    stale-while-revalidate.

    ``build`` is checked here, not at the first read: an ``async def`` (or an object with an
    async ``__call__``) is awaited on the event loop; a plain ``def`` runs in a worker thread
    (``asyncio.to_thread``), so a blocking builder never stalls the loop; a lambda or another
    callable is called on the loop and what it returns awaited if it can be; anything that is
    not callable raises :class:`~freshkeep.exceptions.ConfigurationError`.

    ``partition_of(partitioned, key)`` gives the value whose partition a partitioned source
    follows, when the key is not that value itself (e.g. one item of a tuple key).

    ``apply`` makes it a *delta section*: ``apply(value, changes) -> value`` applies the rows
    that committed transactions changed (:class:`~freshkeep.core.changes.Change`, with before
    and after images, from the SQLAlchemy write hooks) to the section's current value instead
    of rebuilding it. freshkeep calls it only when every change to the section's sources since
    the value was built is known in this process, and rebuilds otherwise; what it returns must
    equal what ``build`` would return (property-test it). ``apply`` is given a decoded copy of
    the value (it may mutate and return it); with ``encoded=True`` it is given the value's
    encoded JSON instead (bytes, or the :class:`~freshkeep.core.entry.Chunks` its last
    ``apply`` returned), and may return bytes or ``Chunks``: for a large value whose section
    keeps its own decoded copy, so that a delta costs what the change costs, not the value's
    size (``Chunks`` are never joined on the way to a response).
    """

    build: Builder
    sources: tuple[str, ...]
    """The sources every key depends on."""
    keyed: tuple[Partitioned, ...]
    """Partitioned sources: each key depends on its own partition of them."""
    sources_of: SourcesOf | None
    policy: Policy | None
    apply: Callable[[Any, Sequence[Change]], Awaitable[Any]] | None
    """The section's delta (``None``: every change rebuilds it)."""
    encoded: bool
    """Whether ``apply`` is given the encoded bytes of the value (else a decoded copy)."""
    partition_of: Callable[[Partitioned, Hashable], object] | None
    """The value of a key whose partition a partitioned source follows (``None``: the key)."""

    def __init__(
        self,
        build: Builder,
        sources: Iterable[str | Partitioned] | SourcesOf,
        *,
        policy: Policy | None = None,
        apply: Apply | None = None,
        encoded: bool = False,
        partition_of: Callable[[Partitioned, Hashable], object] | None = None,
    ) -> None:
        sources_of: SourcesOf | None = None
        keyed: list[Partitioned] = []
        names: set[str] = set()
        if callable(sources):
            sources_of = sources
        elif isinstance(sources, str | bytes):
            raise ConfigurationError(f"sources must be a list of source names, not {sources!r}")
        else:
            for s in sources:
                if isinstance(s, Partitioned):
                    keyed.append(s)
                elif isinstance(s, str) and s:
                    names.add(s)
                else:
                    raise ConfigurationError(f"a source must be a non-empty string, not {s!r}")
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigurationError(f"a section's policy must be a Policy, not {policy!r}")
        if not callable(build):
            raise ConfigurationError(
                f"a builder must be an async function of a BuildContext, not {build!r}"
            )
        if not _is_async(build):
            build = _in_thread(build) if _is_plain_def(build) else _on_loop(build)
        object.__setattr__(self, "build", build)
        object.__setattr__(self, "sources", tuple(sorted(names)))
        object.__setattr__(self, "keyed", tuple(dict.fromkeys(keyed)))
        object.__setattr__(self, "sources_of", sources_of)
        object.__setattr__(self, "policy", policy)
        if apply is not None and not callable(apply):
            raise ConfigurationError(f"a section's apply must be callable, not {apply!r}")
        object.__setattr__(self, "apply", None if apply is None else _applier(apply))
        object.__setattr__(self, "encoded", bool(encoded))
        object.__setattr__(self, "partition_of", partition_of)

    @property
    def per_key(self) -> bool:
        """Whether the sources depend on the key."""
        return bool(self.keyed) or self.sources_of is not None

    def for_key(self, key: Hashable) -> tuple[str, ...]:
        """The sources of ``key``'s entry, sorted."""
        if not self.per_key:
            return self.sources
        found = set(self.sources)
        pick = self.partition_of
        for p in self.keyed:
            found.update(p.of(key if pick is None else pick(p, key)))
        if self.sources_of is not None:
            extra = self.sources_of(key)
            if isinstance(extra, str | bytes):
                raise ConfigurationError(
                    f"the sources of key {key!r} must be a list of source names, not {extra!r}"
                )
            for s in extra:
                if not isinstance(s, str) or not s:
                    raise ConfigurationError(
                        f"a source must be a non-empty string, not {s!r} (key {key!r})"
                    )
                found.add(s)
        return tuple(sorted(found))


def _is_async(fn: Callable[..., Any]) -> bool:
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _is_plain_def(fn: Callable[..., Any]) -> bool:
    """A function written with ``def`` (not a lambda, a partial or a callable object)."""
    return inspect.isfunction(fn) and fn.__name__ != "<lambda>"


def _on_loop(fn: Callable[[BuildContext], Any]) -> Builder:
    """A lambda or another callable, called on the event loop; an awaitable it returns (a
    coroutine, ``asyncio.gather(...)``) is awaited."""

    async def build(ctx: BuildContext) -> Any:
        value = fn(ctx)
        if inspect.isawaitable(value):
            value = await value
        return value

    return build


def _applier(fn: Apply) -> Callable[[Any, Sequence[Change]], Awaitable[Any]]:
    """``fn`` called on the event loop; an awaitable it returns is awaited."""

    async def apply(value: Any, changes: Sequence[Change]) -> Any:
        out = fn(value, changes)
        if inspect.isawaitable(out):
            out = await out
        return out

    return apply


def _in_thread(fn: Callable[[BuildContext], Any]) -> Builder:
    """``fn``, a plain function, run in a worker thread (an awaitable it returns is awaited)."""

    @functools.wraps(fn)
    async def build(ctx: BuildContext) -> Any:
        value = await asyncio.to_thread(fn, ctx)
        if inspect.isawaitable(value):  # e.g. a lambda returning a coroutine
            value = await value
        return value

    return build


class ViewObserver(Protocol):
    """Told about a view's slow-path events (e.g. by the Prometheus metrics, to fill histograms).

    Never called on the hit path. Add one to :attr:`View.observers`; an observer that raises
    is logged and does not fail the read.
    """

    def build_finished(self, view: str, section: str, seconds: float) -> None:
        """A section of ``view`` was built in ``seconds``."""
        ...

    def stale_served(self, view: str, status: Status, age: float) -> None:
        """An entry ``age`` seconds past its last confirmation was served (``status`` is
        ``stale`` or ``error-stale``)."""
        ...


@dataclass(slots=True)
class ViewStats:
    """Counters of one view (read by health checks and metrics)."""

    reads: dict[str, int] = field(default_factory=dict)
    builds: dict[str, int] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)
    build_errors: int = 0
    background_refreshes: int = 0
    collapsed: int = 0
    shared_hits: int = 0
    """Builds answered from the shared store (another instance built it)."""
    shared_waits: int = 0
    """Builds that waited for another instance holding the build lock."""
    deltas: dict[str, int] = field(default_factory=dict)
    """Sections brought up to date by applying changes, by section."""
    delta_seconds: dict[str, float] = field(default_factory=dict)
    """The duration of each section's last delta."""
    delta_fallbacks: dict[str, int] = field(default_factory=dict)
    """Rebuilds of delta sections, by why changes could not be applied (``gap``, ``unknown``,
    ``apply``, ``refresh``, ...)."""
    last_error: str | None = None
    last_error_at: float | None = None
    last_build_at: float | None = None
    failing_since: float | None = None
    """Wall time of the first build error since the last successful build (``None``: the
    last build succeeded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySnapshot:
    """The freshness policy of a view, as reported in its snapshot."""

    mode: str
    max_stale: float
    stale_if_error: float
    max_age: float | None = None
    """Seconds after its build an entry is rebuilt whatever its revisions (``None``: no cap)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaSnapshot(Snapshot):
    """How a view's builds went on its read replica (:attr:`ViewSnapshot.replica
    <freshkeep.views.ViewSnapshot.replica>`)."""

    replica: str
    """The replica's URL, its password hidden."""
    wait: float
    """Seconds a build waits for a lagging replica before it builds on the primary."""
    on_replica: int
    """Sections built on the replica."""
    on_primary: int
    """Sections built on the primary: the replica stayed behind for ``wait`` seconds (or
    could not be reached)."""
    waited: int
    """Builds that waited for the replica to catch up (whichever engine they ended on)."""
    last_wait: float
    """Seconds the last build that waited spent waiting."""
    behind: int
    """Builds on the replica in which a source the builder added (``ctx.depend``) was
    older than the keeper knew: each was built again on the primary."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewSnapshot(Snapshot):
    """A view's counters now (:meth:`View.snapshot`)."""

    view: str
    """The view's name (as ``name``: the key of the stats JSON)."""
    sources: tuple[str, ...]
    policy: PolicySnapshot
    reads: Mapping[str, int]
    """Reads by status (``hit`` counts the hits of the memory store too)."""
    builds: Mapping[str, int]
    """Builds by section."""
    build_seconds: Mapping[str, float]
    """The duration of each section's last build."""
    build_errors: int
    background_refreshes: int
    collapsed: int
    shared_hits: int
    shared_waits: int
    last_error: str | None
    last_error_at: float | None
    last_build_at: float | None
    failing_since: float | None
    """Wall time of the first build error since the last successful build (``None``: the
    last build succeeded)."""
    in_flight: int
    deltas: Mapping[str, int] = field(default_factory=dict)
    """Sections brought up to date by applying changes instead of a rebuild, by section."""
    delta_seconds: Mapping[str, float] = field(default_factory=dict)
    """The duration of each section's last delta."""
    delta_fallbacks: Mapping[str, int] = field(default_factory=dict)
    """Rebuilds of delta sections by reason: ``gap`` (a revision this process was not told
    of: another process, a trigger, a resync, or the change log forgot it), ``unknown`` (a
    write whose rows are not known: bulk DML, raw SQL, ``bump``), ``apply`` (``apply`` raised),
    ``order``, ``revision``, ``refresh`` (a forced or by-hand rebuild), ``expired``."""
    partitions: tuple[str, ...] = ()
    """The partitioned sources a keyed section reads the key's partition of
    (``table:<t>/<column>``)."""
    replica: ReplicaSnapshot | None = None
    """How its builds went on its read replica; ``None`` for a view built on the primary."""
