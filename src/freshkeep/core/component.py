"""The component contract: every part a :class:`~freshkeep.Keeper` knows reports a snapshot.

A *component* is a view, a remote value, a notifier, an artifact cache, a processing pipeline, a
job queue, a bus or a shared store. Each one has a ``name``, a ``kind`` and a :meth:`snapshot`:
a frozen dataclass of plain, typed fields (counters, timestamps, the last error). Health checks,
the Prometheus collector, the dashboard and the stats JSON read those fields, never attributes
found with ``getattr``, so a renamed counter is a type error, not a broken page at run time.

Snapshots are cheap (no I/O) and taken at read time: a scrape or a health check calls
:meth:`Component.snapshot` on every component it reports.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, get_args

Kind = Literal["view", "remote", "notifier", "artifacts", "pipeline", "jobs", "bus", "store"]
"""The kinds of component a keeper registers."""

KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every :data:`Kind`, in order."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The base of every component snapshot: typed, frozen, plain data."""

    name: str
    """The component's name (unique among the components of its kind)."""

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready plain data: dicts, lists and scalars keyed by the field
        names, nested snapshots included. ``name`` is left out (of nested snapshots too): the
        stats JSON lists a snapshot under its name, and keeps the keys it always had."""
        return _fields(self)


def _fields(obj: Any) -> dict[str, Any]:
    skip = "name" if isinstance(obj, Snapshot) else None
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != skip}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class Component(ABC):
    """Something registered with a keeper that reports a typed :class:`Snapshot`.

    Register one with :meth:`freshkeep.Keeper.register`; the keeper's typed accessors
    (:meth:`freshkeep.Keeper.components`, ``keeper.views``, ``keeper.pipelines``, ...) list
    them by kind.
    """

    __slots__ = ()

    kind: ClassVar[Kind]
    """What the component is (``"view"``, ``"jobs"``, …)."""

    name: str
    """Its name, unique among the components of its kind."""

    @abstractmethod
    def snapshot(self) -> Snapshot:
        """Its counters and state now, without I/O."""


__all__ = ["KINDS", "Component", "Kind", "Snapshot"]
