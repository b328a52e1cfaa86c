"""The message format of the buses between processes, and their status counters.

A message is JSON (orjson), never pickle: ``{"o": origin, "r": {source: revision}}``. The
PostgreSQL change-capture triggers send the same format with the origin ``"trigger"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from freshkeep.core.revision import Revision


def encode(revisions: Mapping[str, Revision], origin: str) -> bytes:
    """One message of the bus."""
    return orjson.dumps({"o": origin, "r": dict(revisions)})


def decode(payload: bytes | str) -> tuple[dict[str, Revision], str]:
    """The revisions and origin of a message; ``ValueError`` if it is malformed."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    origin, revisions = data.get("o", ""), data.get("r")
    if not isinstance(origin, str) or not isinstance(revisions, dict):
        raise ValueError('expected {"o": str, "r": {source: revision}}')
    for source, rev in revisions.items():
        if isinstance(rev, bool) or not isinstance(rev, int | str):
            raise ValueError(f"the revision of {source!r} is not an int or str: {rev!r}")
    return revisions, origin


@dataclass(slots=True)
class BusStats:
    """Counters and state of a bus (see :meth:`RemoteBus.snapshot`)."""

    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    published: int = 0
    received: int = 0
    errors: int = 0
    malformed: int = 0
    dropped: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_outage_started_at: float | None = None
    last_outage_ended_at: float | None = None
