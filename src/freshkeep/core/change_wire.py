"""Changed rows between processes: a commit's :class:`~freshkeep.core.changes.Change` records
as plain JSON values, so a bus message can carry them and another process can apply them.

A commit's changes travel as ``{"k": [source, ...], "w": [[table, op, before, after], ...],
"s": {source: revision}}``: ``k`` the sources whose changes in the commit are all known (every
other source the message moves is unknown to the receiver: a gap, so a rebuild), ``w`` the rows
in flush order, ``s`` (optional) the revisions sources had before the commit's triggers bumped
them in it (every revision between those and the commit's is the commit's own). A row
image maps each column to its value: ``null``, a boolean, an integer, a string or a finite
float as is; anything else as a two-item list ``[tag, text]`` (``dt`` datetime, ``d`` date,
``tm`` time, ``dec`` Decimal, ``u`` UUID, ``b`` base64 bytes, ``j`` a JSON column's value). A
value of any other type (or a float that is not finite) cannot be carried exactly: the commit's
changes are then not sent at all, and the receiver rebuilds.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from freshkeep.core.changes import Change

__all__ = ["CommitChanges", "Unsendable", "changes_from_wire", "changes_to_wire"]


class Unsendable(ValueError):
    """A change holds a value that cannot be carried exactly (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class CommitChanges:
    """What a committed transaction is known to have done, as a bus message carries it."""

    known: frozenset[str]
    """The sources whose changes in the commit are all in :attr:`changes`."""
    changes: tuple[Change, ...]
    """The known changes, in flush order."""
    since: Mapping[str, int] = field(default_factory=dict)
    """Per source, the revision before the first its triggers bumped in the commit."""


_OPS = ("insert", "update", "delete")


def _value(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise Unsendable(f"a float that is not finite: {v!r}")
        return v
    if isinstance(v, datetime):
        return ["dt", v.isoformat()]
    if isinstance(v, date):
        return ["d", v.isoformat()]
    if isinstance(v, time):
        return ["tm", v.isoformat()]
    if isinstance(v, Decimal):
        if not v.is_finite():
            raise Unsendable(f"a Decimal that is not finite: {v!r}")
        return ["dec", str(v)]
    if isinstance(v, uuid.UUID):
        return ["u", str(v)]
    if isinstance(v, bytes):
        return ["b", base64.b64encode(v).decode()]
    if isinstance(v, dict | list):
        try:  # a JSON column: its value must come back as it went
            if orjson.loads(orjson.dumps(v)) != v:
                raise Unsendable("a JSON value that does not survive JSON")
        except orjson.JSONEncodeError as exc:
            raise Unsendable(f"a JSON value that is not JSON: {exc}") from exc
        return ["j", v]
    raise Unsendable(f"a value of type {type(v).__name__}")


def _image(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {str(k): _value(v) for k, v in row.items()}


def changes_to_wire(
    known: Iterable[str], changes: Sequence[Change], since: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """``changes`` (the ``known`` sources they cover, the revisions ``since`` which the commit
    owns) as plain JSON values; raises :class:`Unsendable` when a value cannot be carried
    exactly."""
    out: dict[str, Any] = {
        "k": sorted(known),
        "w": [[c.table, c.op, _image(c.before), _image(c.after)] for c in changes],
    }
    if since:
        out["s"] = dict(since)
    return out


_FROM: dict[str, Any] = {
    "dt": datetime.fromisoformat,
    "d": date.fromisoformat,
    "tm": time.fromisoformat,
    "dec": Decimal,
    "u": uuid.UUID,
    "b": base64.b64decode,
}


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        if len(v) != 2 or not isinstance(v[0], str):
            raise ValueError(f"a tagged value is [tag, value], not {v!r}")
        tag, text = v
        if tag == "j":
            return text
        parse = _FROM.get(tag)
        if parse is None or not isinstance(text, str):
            raise ValueError(f"unknown tagged value {v!r}")
        return parse(text)
    if isinstance(v, dict):
        raise ValueError("a value is plain or [tag, value], not an object")
    return v


def _row(image: Any) -> dict[str, Any] | None:
    if image is None:
        return None
    if not isinstance(image, dict):
        raise ValueError("a row image is an object or null")
    return {k: _plain(v) for k, v in image.items()}


def changes_from_wire(data: Any) -> CommitChanges:
    """The changes a message carried; ``ValueError`` if they are malformed."""
    if not isinstance(data, dict):
        raise ValueError("the changes are an object")
    known, rows = data.get("k"), data.get("w")
    if not isinstance(known, list) or not all(isinstance(s, str) for s in known):
        raise ValueError("the known sources are a list of strings")
    if not isinstance(rows, list):
        raise ValueError("the changed rows are a list")
    out: list[Change] = []
    for item in rows:
        if not isinstance(item, list) or len(item) != 4:
            raise ValueError("a changed row is [table, op, before, after]")
        table, op, before, after = item
        if not isinstance(table, str) or op not in _OPS:
            raise ValueError(f"a changed row of table {table!r} has the op {op!r}")
        b, a = _row(before), _row(after)
        if (op == "insert") != (b is None) or (op == "delete") != (a is None):
            raise ValueError(f"the images of an {op} do not match it")
        out.append(Change(table, op, b, a))
    since = data.get("s") or {}
    if not isinstance(since, dict) or not all(
        isinstance(r, int) and not isinstance(r, bool) for r in since.values()
    ):
        raise ValueError("the revisions since are {source: int}")
    return CommitChanges(frozenset(known), tuple(out), since)
