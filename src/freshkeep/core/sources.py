"""Which sources can move: a view that reads a source nothing can ever bump never invalidates.

A source is *known* when something moves it:

- a table the write hooks track (``track(keeper, Session, models=[...])``);
- a table of the database (the SQL revision source lists them: triggers, other programs and
  the hooks with ``models=None`` all write tables that exist);
- a watermark the revision source reads;
- a name the application declared as its own (``Keeper(sources=[...])`` or
  :meth:`freshkeep.Keeper.declare`): the sources it bumps itself (``keeper.bump("tag:…")``).

:class:`SourceCheck` keeps what a keeper knows and says what is wrong, with a did-you-mean
suggestion. It is pure: the keeper feeds it the catalog read from the database at start.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from freshkeep.core.partitions import split_source
from freshkeep.exceptions import UnknownSourceError


class SourceCheck:
    """What a keeper knows of its sources, and the verdict on a view's sources."""

    __slots__ = ("catalog", "declared", "tracked")

    def __init__(self, declared: Iterable[str] = ()) -> None:
        self.declared: set[str] = set(declared)
        """Sources the application bumps itself."""
        self.tracked: set[str] = set()
        """``table:`` sources of tables the write hooks track."""
        self.catalog: frozenset[str] | None = None
        """What the revision source can read (``None``: not read yet, or cannot tell)."""

    @property
    def known(self) -> set[str]:
        return self.declared | self.tracked | (self.catalog or frozenset())

    @property
    def active(self) -> bool:
        """Whether there is anything to check against: a catalog, declarations or tracking."""
        return self.catalog is not None or bool(self.declared) or bool(self.tracked)

    def unknown(self, sources: Iterable[str]) -> list[str]:
        """The sources of ``sources`` nothing known moves."""
        known = self.known
        # A partition (table:t/col#3, table:t/*) is known when its table is.
        return [s for s in sources if s not in known and split_source(s)[0] not in known]

    def suggestion(self, source: str) -> str | None:
        """The closest known source, if one is close enough to be a typo of ``source``."""
        known = sorted(self.known)
        if not known:
            return None
        bare = {k.partition(":")[2] or k: k for k in known}
        if source in bare:  # "orders" for "table:orders"
            return bare[source]
        found = difflib.get_close_matches(source, known, n=1, cutoff=0.75)
        if not found:
            found = [bare[m] for m in difflib.get_close_matches(source, list(bare), 1, 0.75)]
        return found[0] if found else None

    def error(self, view: str, bad: Iterable[str]) -> UnknownSourceError:
        """The error for ``view`` reading ``bad`` sources."""
        parts = []
        for source in bad:
            hint = self.suggestion(source)
            parts.append(f"{source!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
        return UnknownSourceError(
            f"view {view!r} reads {', '.join(parts)}, which nothing moves: a source must be a "
            "tracked table (track(keeper, Session, models=[...])), a table of the database "
            "(table:<name>), or declared with Keeper(sources=[...]) / keeper.declare(...) "
            "when the application bumps it itself"
        )


__all__ = ["SourceCheck"]
