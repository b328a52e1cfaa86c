"""Where a notifier keeps the last confirmed state of each subject, and how states compare."""

from __future__ import annotations

from typing import Any

import orjson

from freshkeep.exceptions import EncodeError
from freshkeep.ports import StateStore as StateStore

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical(state: Any) -> bytes:
    """A state's canonical form: JSON with sorted keys. Two states are the same state when
    their canonical forms are equal bytes. Raises ``EncodeError`` for what JSON cannot hold."""
    try:
        return orjson.dumps(state, option=_OPTIONS)
    except TypeError as exc:
        raise EncodeError(f"a notifier state must be JSON-encodable: {exc}") from exc


class MemoryStateStore(StateStore):
    """A :class:`StateStore` in a dict: states survive a notifier, not the process."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], tuple[bytes, float]] = {}

    async def get(self, notifier: str, subject: str) -> bytes | None:
        """The confirmed state of ``subject``, or ``None``."""
        found = self.states.get((notifier, subject))
        return None if found is None else found[0]

    async def get_all(self, notifier: str) -> dict[str, bytes]:
        """Every confirmed state of ``notifier``."""
        return {s: v for (n, s), (v, _) in self.states.items() if n == notifier}

    async def set(self, notifier: str, subject: str, state: bytes, confirmed_at: float) -> None:
        """Record the confirmed state of ``subject``."""
        self.states[(notifier, subject)] = (state, confirmed_at)

    async def delete(self, notifier: str, subject: str) -> None:
        """Forget the confirmed state of ``subject``."""
        self.states.pop((notifier, subject), None)
