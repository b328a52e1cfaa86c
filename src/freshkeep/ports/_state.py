"""The state-store ports: a notifier's confirmed states, and a processor's per-item states."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class StateStore(ABC):
    """The last confirmed state of each (notifier, subject), as canonical JSON bytes.

    Implementations: :class:`~freshkeep.notify.MemoryStateStore` (the default, lost on
    restart), :class:`freshkeep.notify.sql.SQLAlchemyStateStore` and
    :class:`freshkeep.notify.redis.RedisStateStore`. Nothing is pickled.
    """

    @abstractmethod
    async def get(self, notifier: str, subject: str) -> bytes | None:
        """The confirmed state of ``subject``, or ``None`` if none was confirmed."""

    @abstractmethod
    async def get_all(self, notifier: str) -> dict[str, bytes]:
        """Every confirmed state of ``notifier``, by subject."""

    @abstractmethod
    async def set(self, notifier: str, subject: str, state: bytes, confirmed_at: float) -> None:
        """Record ``state`` as the confirmed state of ``subject`` (wall-clock ``confirmed_at``)."""

    @abstractmethod
    async def delete(self, notifier: str, subject: str) -> None:
        """Forget the confirmed state of ``subject``."""


@dataclass(frozen=True, slots=True)
class ItemState:
    """What is recorded per (processor, item).

    ``processed_at`` is the wall time of the last successful processing (``None``: never
    succeeded); ``mtime_ns``/``size``/``content_hash`` describe the content last looked at;
    ``attempts`` counts the failures since the last success; ``retry_at`` is the wall time
    before which a failed item is not tried again (unless its file changes).
    """

    processor: str
    key: str
    mtime_ns: int
    size: int
    content_hash: str | None = None
    processed_at: float | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    last_error: str | None = None
    attempts: int = 0
    retry_at: float | None = None

    @property
    def failed(self) -> bool:
        """Whether the last attempt on this content failed."""
        return self.last_error is not None


class ProcessingStateStore(ABC):
    """Per-(processor, item) state. A run loads a processor's states in one call and writes
    them in batches; processors never see each other's rows."""

    @abstractmethod
    async def load(self, processor: str) -> dict[str, ItemState]:
        """Every state of ``processor``, by item key."""

    @abstractmethod
    async def save(self, states: Sequence[ItemState]) -> None:
        """Insert or replace ``states`` (one transaction)."""

    @abstractmethod
    async def delete(self, processor: str, keys: Iterable[str]) -> None:
        """Forget the states of ``keys`` (items that no longer exist)."""


__all__ = ["ItemState", "ProcessingStateStore", "StateStore"]
