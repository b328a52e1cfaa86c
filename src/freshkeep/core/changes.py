"""Changed rows: what a committed transaction did to the sources a delta section reads.

The write hooks record, per committed transaction, a :class:`Change` for each row an ORM flush
wrote whose before and after images are fully known; anything else the transaction did to a
table (bulk DML, raw SQL, ``bump()``, a flush whose images are incomplete) marks that table's
changes in that commit *unknown*. The keeper keeps what it was told in a :class:`ChangeLog`: a
bounded, in-process log keyed by source and revision, read by views whose sections can apply
changes to their value instead of rebuilding it (``Section(apply=...)``).

A delta is an optimisation, never a source of truth: when the log cannot account for every
revision a source moved by since a value was built (another process wrote, a trigger or a
resync moved it, the log forgot it, a change was unknown), the section is rebuilt.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from freshkeep.core.revision import Revision
from freshkeep.exceptions import FreshkeepError

__all__ = ["Change", "ChangeLog", "Commit", "Op", "Rebuild"]

Op = Literal["insert", "update", "delete"]


class Rebuild(FreshkeepError):
    """Raised by a section's ``apply`` when it cannot apply the changes exactly: freshkeep
    rebuilds the section instead (counted as a delta fallback, reason ``apply``)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One row a committed transaction wrote.

    ``table`` is the table's source (``table:tasks``). ``before`` is the row as it was (``None``
    for an insert), ``after`` the row as it was written (``None`` for a delete); both map
    every mapped column's name to its plain Python value.
    """

    table: str
    op: Op
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None

    @property
    def row(self) -> Mapping[str, Any]:
        """The after image, or the before image of a delete."""
        row = self.after if self.after is not None else self.before
        assert row is not None
        return row

    def changed(self, column: str) -> bool:
        """Whether ``column`` differs between the images (always for an insert or delete)."""
        if self.before is None or self.after is None:
            return True
        return self.before.get(column) != self.after.get(column)


@dataclass(frozen=True, slots=True)
class Commit:
    """What one committed transaction did to the sources the log follows."""

    seq: int
    """Order in which this process was told of it."""
    revisions: Mapping[str, Revision]
    """The revisions the commit produced, by source."""
    changes: tuple[Change, ...]
    """Its known changes, in flush order."""
    unknown: frozenset[str]
    """The sources whose changes in this commit are not all known."""


_SEQ = itertools.count(1)
_SPAN = 1024
"""At most this many revisions of one source are taken as one commit's (a trigger bumps once
per row on SQLite); a longer span is left unknown: the sections reading it are rebuilt."""


class ChangeLog:
    """A bounded log of this process's commits, by (source, revision).

    Only the sources some delta section reads are kept (:meth:`follow`); a commit that touched
    none of them costs a set intersection. ``capacity`` bounds the commits kept: the oldest
    are forgotten first, and a value older than what is kept is rebuilt. ``max_rows`` bounds the
    rows kept of one commit.
    """

    def __init__(self, capacity: int = 4096, max_rows: int = 10_000) -> None:
        self.capacity = capacity
        self.max_rows = max_rows
        """A commit that changed more rows than this keeps none: its sources' changes are
        unknown (applying that many rows costs about what a rebuild costs)."""
        self.followed: set[str] = set()
        """The sources whose changes the write hooks record (images are taken for these)."""
        self._by_rev: dict[tuple[str, Revision], Commit] = {}
        self._commits: OrderedDict[int, tuple[Commit, list[tuple[str, Revision]]]] = OrderedDict()
        self.recorded = 0
        """Commits recorded since start."""
        self.forgotten = 0
        """Commits dropped because the log was full."""

    def follow(self, sources: Iterable[str]) -> None:
        """Record the changes of ``sources`` from now on."""
        self.followed.update(sources)

    def wants(self, source: str) -> bool:
        """Whether the changes of ``source`` are recorded."""
        return source in self.followed

    def record(
        self,
        revisions: Mapping[str, Revision],
        changes: Sequence[Change],
        unknown: Iterable[str],
        *,
        since: Mapping[str, Revision] | None = None,
    ) -> None:
        """Remember a committed transaction: the ``revisions`` it produced, its known
        ``changes`` and the sources whose changes are ``unknown``. ``since``: revisions the
        sources had before the transaction first wrote them, when every revision between
        those and the commit's is known to be its own (triggers bumped them in it)."""
        followed = self.followed
        kept = {s: r for s, r in revisions.items() if s in followed}
        if not kept:
            return
        rows = tuple(c for c in changes if c.table in kept)
        unknowns = frozenset(s for s in unknown if s in kept)
        if len(rows) > self.max_rows:
            rows, unknowns = (), frozenset(kept)
        commit = Commit(next(_SEQ), kept, rows, unknowns)
        keys: list[tuple[str, Revision]] = []
        for s, r in kept.items():
            keys.append((s, r))
            first = (since or {}).get(s)
            if isinstance(first, int) and isinstance(r, int) and 0 < r - first <= _SPAN:
                keys.extend((s, own) for own in range(first + 1, r))
        for k in keys:
            self._by_rev[k] = commit
        self._commits[commit.seq] = (commit, keys)
        self.recorded += 1
        while len(self._commits) > self.capacity:
            _, (old, old_keys) = self._commits.popitem(last=False)
            self.forgotten += 1
            for k in old_keys:
                if self._by_rev.get(k) is old:
                    del self._by_rev[k]

    def between(
        self, sources: Sequence[str], built: Sequence[Revision], now: Sequence[Revision]
    ) -> tuple[list[Change], None] | tuple[None, str]:
        """The changes that took ``sources`` from ``built`` to ``now``, in commit order, or
        ``(None, reason)`` when the log cannot account for every step: ``gap`` (a revision
        it was not told of: another process, a trigger, a resync, or forgotten), ``unknown``
        (a commit whose changes to one of them are not known), ``order`` (commits told out of
        their order), ``revision`` (revisions that are not counters)."""
        commits: dict[int, Commit] = {}
        for source, old, new in zip(sources, built, now, strict=True):
            if old == new:
                continue
            if not isinstance(old, int) or not isinstance(new, int) or new < old:
                return None, "revision"
            inside = self._by_rev.get((source, old))
            if inside is not None and inside.revisions.get(source) != old:
                # Built at a revision inside a commit (a trigger's message, sent at its
                # commit): the value may hold all of that commit, or none of it.
                return None, "gap"
            for rev in range(old + 1, new + 1):
                commit = self._by_rev.get((source, rev))
                if commit is None:
                    return None, "gap"
                if source in commit.unknown:
                    return None, "unknown"
                commits[commit.seq] = commit
        ordered = [commits[k] for k in sorted(commits)]
        last: dict[str, Revision] = {}
        out: list[Change] = []
        wanted = set(sources)
        for commit in ordered:
            for s, r in commit.revisions.items():
                prev = last.get(s)
                if isinstance(prev, int) and isinstance(r, int) and r <= prev:
                    return None, "order"
                last[s] = r
            out.extend(c for c in commit.changes if c.table in wanted)
        return out, None

    def __len__(self) -> int:
        return len(self._commits)
