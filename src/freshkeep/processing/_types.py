"""The processor contract: items, outcomes, the context of a call, and the stats of a run."""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from freshkeep.core.component import Snapshot
from freshkeep.ports import ItemState as ItemState


@dataclass(frozen=True, slots=True)
class Item:
    """One thing a processor takes: a file, known by a stable ``key`` (its path under the root,
    with ``/`` separators), at ``location`` (a path string), with the ``mtime_ns`` and ``size``
    of one ``os.stat``."""

    key: str
    location: str
    mtime_ns: int
    size: int

    @property
    def path(self) -> Path:
        """``location`` as a :class:`~pathlib.Path` (made on demand: scans stay cheap)."""
        return Path(self.location)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing one item extracted: ``counts`` (kept in the state table) and free-form
    ``details`` (returned to the caller, not stored)."""

    counts: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProcessContext:
    """Handed to :meth:`Processor.process` with each item."""

    processor: str
    """The name of the processor running."""
    previous: ItemState | None
    """The item's state before this run (``None``: never seen)."""
    content_hash: str
    """The SHA-256 of the item's content, computed by the runner."""
    now: float
    """Wall time of the run's start."""


@dataclass(slots=True)
class RunStats:
    """The figures of one run of one processor.

    Every item scanned ends in exactly one of: ``skipped`` (mtime and size unchanged: the file
    was not opened), ``unchanged`` (hashed, same content: not reprocessed), ``deferred`` (failed
    before, waiting for its retry backoff), ``processed`` or ``failed``.
    """

    processor: str
    scanned: int = 0
    skipped: int = 0
    unchanged: int = 0
    deferred: int = 0
    processed: int = 0
    failed: int = 0
    hashed: int = 0
    """Files whose content was read to hash it."""
    started_at: float = 0.0
    duration: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)
    """The error of each item that failed in this run (the first 100)."""

    @property
    def skips(self) -> dict[str, int]:
        """Items not processed, by reason."""
        return {
            "mtime_unchanged": self.skipped,
            "hash_unchanged": self.unchanged,
            "backoff": self.deferred,
        }

    def as_dict(self) -> dict[str, Any]:
        """The stats as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSnapshot(Snapshot):
    """A pipeline's processors now (:meth:`Pipeline.snapshot`)."""

    processors: tuple[str, ...]
    """The names of its processors, in registration order."""
    running: tuple[str, ...]
    """Those with a run going on in this process."""
    last_runs: Mapping[str, RunStats]
    """The figures of each processor's last completed run (absent: none yet)."""


class Processor(ABC):
    """Derives something from items, once per content of each item.

    Subclass it: set ``name``, and either ``root`` and ``pattern`` (the default :meth:`items`
    yields the regular files under ``root`` whose relative path matches the glob ``pattern``)
    or override :meth:`items`; implement :meth:`process`.
    """

    name: str
    root: Path | None = None
    pattern: str = "**/*"

    def items(self) -> Iterator[Item]:
        """The items to consider, streamed (nothing is read but one ``os.stat`` per file).

        ``pattern`` is matched per path segment (``fnmatch``, case-sensitive); a ``**``
        segment matches any number of directories. Only one directory's listing is held at
        a time.
        """
        if self.root is None:
            raise NotImplementedError(f"{type(self).__name__} sets no root: override items()")
        root = os.fspath(self.root)
        parts = [p for p in self.pattern.split("/") if p]
        return _walk(root, parts, "") if parts else iter(())

    @abstractmethod
    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        """Derive what this processor derives from ``item``. Raise to fail this item only."""


def _walk(directory: str, parts: list[str], prefix: str) -> Iterator[Item]:
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        if rest:
            yield from _walk(directory, rest, prefix)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                yield from _walk(e.path, parts, f"{prefix}{e.name}/")
        return
    literal = not any(c in head for c in "*?[")
    for e in entries:
        if not (e.name == head if literal else fnmatchcase(e.name, head)):
            continue
        if rest:
            if e.is_dir():
                yield from _walk(e.path, rest, f"{prefix}{e.name}/")
            continue
        try:
            st = e.stat()
        except FileNotFoundError:  # removed since the directory was listed
            continue
        if stat.S_ISREG(st.st_mode):
            yield Item(prefix + e.name, e.path, st.st_mtime_ns, st.st_size)
