"""The message format of the buses between processes, and their status counters.

A message is JSON (orjson), never pickle: ``{"o": origin, "r": {source: revision}, "t": sent}``,
``sent`` the publisher's wall-clock seconds (so a receiver can tell how long delivery took, by
the two hosts' clocks). The PostgreSQL change-capture triggers send the same format with the
origin ``"trigger"`` and no ``"t"``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from freshkeep.core.revision import Revision


def encode(revisions: Mapping[str, Revision], origin: str) -> bytes:
    """One message of the bus, stamped with the time it is sent."""
    return orjson.dumps({"o": origin, "r": dict(revisions), "t": time.time()})


def decode(payload: bytes | str) -> tuple[dict[str, Revision], str]:
    """The revisions and origin of a message; ``ValueError`` if it is malformed."""
    revisions, origin, _ = decode_message(payload)
    return revisions, origin


def decode_message(payload: bytes | str) -> tuple[dict[str, Revision], str, float | None]:
    """The revisions, origin and send time (``None`` when it has none) of a message;
    ``ValueError`` if it is malformed."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    origin, revisions, sent = data.get("o", ""), data.get("r"), data.get("t")
    if not isinstance(origin, str) or not isinstance(revisions, dict):
        raise ValueError('expected {"o": str, "r": {source: revision}}')
    if sent is not None and (isinstance(sent, bool) or not isinstance(sent, int | float)):
        raise ValueError(f"the send time is not a number: {sent!r}")
    for source, rev in revisions.items():
        if isinstance(rev, bool) or not isinstance(rev, int | str):
            raise ValueError(f"the revision of {source!r} is not an int or str: {rev!r}")
    return revisions, origin, None if sent is None else float(sent)


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
    last_delivery_s: float | None = None
    """Seconds from the send of the last message received (that carried its send time) to
    its delivery here, by the two hosts' clocks."""
