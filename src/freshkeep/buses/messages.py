"""The message format of the buses between processes, and their status counters.

A message is JSON (orjson), never pickle: ``{"o": origin, "r": {source: revision}, "t": sent,
"c": changes}``, ``sent`` the publisher's wall-clock seconds (so a receiver can tell how long
delivery took, by the two hosts' clocks), ``changes`` (optional) the commit's known changed rows
(:mod:`freshkeep.core.change_wire`), so that another process can apply them to its delta sections
instead of rebuilding. A commit whose changes are too large for one message, or hold a value
that cannot be carried exactly, is sent without them: the receivers rebuild. The PostgreSQL
change-capture triggers send the same format with the origin ``"trigger"``, no ``"t"`` and no
``"c"``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from freshkeep.core.change_wire import CommitChanges, Unsendable, changes_from_wire, changes_to_wire
from freshkeep.core.revision import Revision

log = logging.getLogger("freshkeep.bus")

MAX_CHANGES_BYTES = 65_536
"""The default bound of a message carrying changes: past it, the changes are left out."""


def encode(
    revisions: Mapping[str, Revision],
    origin: str,
    changes: CommitChanges | None = None,
    *,
    limit: int = MAX_CHANGES_BYTES,
) -> bytes:
    """One message of the bus, stamped with the time it is sent; with the commit's
    ``changes`` when they can be carried exactly within ``limit`` bytes."""
    message: dict[str, Any] = {"o": origin, "r": dict(revisions), "t": time.time()}
    plain = orjson.dumps(message)
    if changes is None or not changes.known:
        return plain
    try:
        message["c"] = changes_to_wire(changes.known, changes.changes, changes.since)
        full = orjson.dumps(message)
    except (Unsendable, orjson.JSONEncodeError) as exc:
        log.debug("a commit's changes are sent without their rows: %s", exc)
        return plain
    return full if len(full) <= limit else plain


def decode(payload: bytes | str) -> tuple[dict[str, Revision], str]:
    """The revisions and origin of a message; ``ValueError`` if it is malformed."""
    revisions, origin, _ = decode_message(payload)
    return revisions, origin


def decode_message(payload: bytes | str) -> tuple[dict[str, Revision], str, float | None]:
    """The revisions, origin and send time (``None`` when it has none) of a message;
    ``ValueError`` if it is malformed."""
    revisions, origin, sent, _ = decode_full(payload)
    return revisions, origin, sent


def decode_full(
    payload: bytes | str,
) -> tuple[dict[str, Revision], str, float | None, CommitChanges | None]:
    """The revisions, origin, send time and changes of a message; ``ValueError`` if it is
    malformed. Changes that are malformed are logged and taken as none: the receiver then
    treats the commit as a gap and rebuilds."""
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
    changes: CommitChanges | None = None
    raw = data.get("c")
    if raw is not None:
        try:
            changes = changes_from_wire(raw)
        except (ValueError, TypeError) as exc:
            log.warning("a message's changes are malformed (a rebuild follows): %s", exc)
    return revisions, origin, None if sent is None else float(sent), changes


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
