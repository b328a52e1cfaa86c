"""Where per-(processor, item) state lives: the :class:`ProcessingStateStore` port, in memory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from freshkeep.ports import ItemState as ItemState
from freshkeep.ports import ProcessingStateStore as ProcessingStateStore


class MemoryProcessingState(ProcessingStateStore):
    """A :class:`ProcessingStateStore` in a dict (tests, and one process without a database).

    ``loads`` and ``saves`` count calls; ``fail`` makes them raise.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], ItemState] = {}
        self.loads = 0
        self.saves = 0
        self.fail: BaseException | None = None

    async def load(self, processor: str) -> dict[str, ItemState]:
        """Every state of ``processor``, by item key."""
        self.loads += 1
        if self.fail is not None:
            raise self.fail
        return {k: s for (p, k), s in self.rows.items() if p == processor}

    async def save(self, states: Sequence[ItemState]) -> None:
        """Insert or replace ``states``."""
        self.saves += 1
        if self.fail is not None:
            raise self.fail
        for s in states:
            self.rows[(s.processor, s.key)] = s

    async def delete(self, processor: str, keys: Iterable[str]) -> None:
        """Forget the states of ``keys``."""
        for k in keys:
            self.rows.pop((processor, k), None)
