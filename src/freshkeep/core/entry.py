"""Encoded entries: what a store keeps, and what a read returns.

An entry holds its value already encoded (orjson bytes) with its ETag and revision header, so a
hit re-serializes nothing. A composite value is made of sections; each section keeps its own
bytes, fingerprint and build time, so rebuilding one section splices new bytes into the body
without touching the others. A section's bytes may be kept in :class:`Chunks` (a delta that
re-encodes one part of a large value), and an entry's body is kept as the list of its sections'
pieces: it is joined once, when first asked for as bytes, and a response can send the pieces as
they are, so a read after a change copies nothing in proportion to the body's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import orjson

from freshkeep.core.revision import Revision, is_older
from freshkeep.exceptions import EncodeError

Status = Literal["hit", "section", "stale", "miss", "error-stale"]
"""How a read was answered.

``hit``: the entry matched the revisions. ``section``: some sections were rebuilt in line.
``stale``: served past a change, refresh scheduled. ``miss``: built now. ``error-stale``: the
builder failed and the last good value was served.
"""

Fingerprint = tuple[Revision, ...]
"""The revisions one section was built from, in the order of the section's sources."""

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _is_model(obj: Any) -> bool:
    """A Pydantic (v2) model instance, recognised without importing Pydantic."""
    return callable(getattr(obj, "model_dump", None)) and hasattr(type(obj), "model_fields")


def to_plain(value: Any) -> Any:
    """``value`` with a Pydantic model or a dataclass instance at the top turned into the dict
    it encodes as (a model through ``model_dump(mode="json")``); anything else unchanged."""
    if _is_model(value):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _default(obj: Any) -> Any:
    # Databases return Decimal for SUM/NUMERIC (PostgreSQL does for SUM of integers).
    if isinstance(obj, Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    if _is_model(obj):  # what FastAPI users return: a Pydantic model, encoded as its JSON
        return obj.model_dump(mode="json")
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def encode(value: Any) -> bytes:
    """Encode a built value as JSON bytes, or raise :class:`EncodeError` naming the problem.

    orjson encodes dicts, lists, str, int, float, bool, None, datetimes, UUIDs, dataclasses and
    enums natively; Pydantic models are encoded as ``model_dump(mode="json")``; ``Decimal``
    becomes an int when integral, else a float. ``bytes`` are taken as already encoded JSON.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS)
    except TypeError as exc:
        raise EncodeError(f"value cannot be encoded as JSON: {exc}") from exc


class Chunks:
    """Encoded JSON kept in pieces: joined, they are its bytes.

    A section's ``apply`` (``Section(apply=..., encoded=True)``) may return one, so that a
    change re-encodes the pieces it touches and nothing copies the others: the entry's body
    keeps the pieces (see :attr:`Entry.chunks`). Equal to the bytes it joins to, and to other
    chunks joining to the same bytes.
    """

    __slots__ = ("_joined", "parts", "size")

    def __init__(self, parts: Iterable[bytes]) -> None:
        self.parts: tuple[bytes, ...] = tuple(p for p in parts if p)
        """The pieces, empty ones left out."""
        self.size: int = sum(map(len, self.parts))
        """Bytes in all."""
        self._joined: bytes | None = None

    def join(self) -> bytes:
        """The bytes (joined on first use, then kept)."""
        joined = self._joined
        if joined is None:
            joined = self._joined = b"".join(self.parts)
        return joined

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Chunks):
            return other is self or (other.size == self.size and other.join() == self.join())
        if isinstance(other, bytes):
            return len(other) == self.size and other == self.join()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.join())

    def __repr__(self) -> str:
        return f"Chunks(parts={len(self.parts)}, size={self.size})"


Body = bytes | Chunks
"""A section's encoded JSON: bytes, or :class:`Chunks`."""


def body_bytes(body: Body) -> bytes:
    """``body`` as bytes (chunks joined)."""
    return body.join() if isinstance(body, Chunks) else body


def body_size(body: Body) -> int:
    """The length of ``body`` in bytes (chunks are not joined)."""
    return body.size if isinstance(body, Chunks) else len(body)


@dataclass(frozen=True, slots=True)
class SectionEntry:
    """One built section: its encoded bytes, the revisions it was built from, when."""

    body: Body
    """Its encoded JSON object: bytes, or :class:`Chunks` joining to them."""
    fingerprint: Fingerprint
    built_at: float
    """Wall-clock seconds when the build read its revisions."""
    built_mono: float
    """Monotonic seconds when the build read its revisions (for ages and bounds)."""


def _key_token(key: object) -> bytes:
    try:
        return orjson.dumps(key, option=_ORJSON_OPTIONS)
    except TypeError:
        return repr(key).encode()


def compute_etag(view: str, key: object, vector: Mapping[str, Revision], version: str = "") -> str:
    """A weak ETag from the view (and its version), key and revision vector: the same in every
    process and after a restart."""
    h = hashlib.blake2b(digest_size=12)
    h.update(view.encode())
    h.update(b"\x00")
    h.update(version.encode())
    h.update(b"\x00")
    h.update(_key_token(key))
    for source in sorted(vector):
        h.update(b"\x00")
        h.update(source.encode())
        h.update(b"=")
        h.update(str(vector[source]).encode())
    return f'W/"{h.hexdigest()}"'


def format_revision(vector: Mapping[str, Revision]) -> str:
    """The revision vector as a header value: ``source=rev,source=rev`` sorted by source."""
    return ",".join(f"{s}={vector[s]}" for s in sorted(vector))


def parse_revision(text: str) -> dict[str, Revision]:
    """Parse a revision vector written by :func:`format_revision` (a causal token).

    Raises :class:`ValueError` naming the part that is not ``source=revision``.
    """
    out: dict[str, Revision] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        source, sep, rev = part.rpartition("=")
        if not sep or not source or not rev:
            raise ValueError(f"not source=revision: {part!r}")
        out[source] = int(rev) if rev.isdigit() else rev
    return out


def splice_chunks(bodies: Sequence[Body]) -> tuple[bytes, ...]:
    """The pieces that, joined, are :func:`splice` of ``bodies`` (encoded JSON objects with
    disjoint keys): :class:`Chunks` contribute their pieces as they are, only the first and
    the last re-cut (for the braces); a bytes body is cut once (one copy of it)."""
    if len(bodies) == 1:
        only = bodies[0]
        return only.parts if isinstance(only, Chunks) else (only,)
    out: list[bytes] = [b"{"]
    for body in bodies:
        if body_size(body) <= 2:
            continue  # an empty object
        if isinstance(body, Chunks):
            parts = list(body.parts)
            parts[0] = parts[0][1:]
            parts[-1] = parts[-1][:-1]
            out += [p for p in parts if p]
        else:
            out.append(body[1:-1])
        out.append(b",")
    if len(out) == 1:
        return (b"{}",)
    out[-1] = b"}"
    return tuple(out)


def splice(bodies: Sequence[Body]) -> bytes:
    """Merge encoded JSON objects into one object (their keys must be disjoint)."""
    if len(bodies) == 1:
        return body_bytes(bodies[0])
    if any(isinstance(b, Chunks) for b in bodies):
        return b"".join(splice_chunks(bodies))
    pieces: list[bytes | memoryview] = [b"{"]
    for b in bodies:
        assert isinstance(b, bytes)
        if len(b) > 2:
            pieces += (memoryview(b)[1:-1], b",")  # one copy: the join's
    if len(pieces) == 1:
        return b"{}"
    pieces[-1] = b"}"
    return b"".join(pieces)


@dataclass(slots=True, eq=False)
class Entry:
    """A built value: per-section parts, and the body, ETag and revision derived from them."""

    view: str
    key: object
    sections: Mapping[str, SectionEntry]
    sources: Mapping[str, tuple[str, ...]]
    """The sources of each section, in fingerprint order."""
    version: str = ""
    """The view's version (part of the ETag)."""
    chunks: tuple[bytes, ...] = field(init=False)
    """The encoded body in pieces (the sections' own, spliced): joined, they are :attr:`body`.
    A response may send them one by one instead."""
    _body: bytes | None = field(default=None, init=False)
    etag: str = field(init=False)
    revision: str = field(init=False)
    vector: dict[str, Revision] = field(init=False)
    built_at: float = field(init=False)
    built_mono: float = field(init=False)
    confirmed_mono: float = field(init=False)
    """Monotonic seconds when this entry was last known to match the revisions: its build, or
    a later check that found it current. Bounds (``max_stale``, ``stale_if_error``) count from
    here: what is served is at most that much older than the sources."""
    hits: int = field(default=0, init=False)
    """Hits served from this entry by the hit path (also its recency, for eviction)."""
    seen_hits: int = field(default=0, init=False)
    """``hits`` when the store last considered evicting this entry."""
    epoch: int = field(default=-1, init=False)
    """The tracker epoch at which this entry was last found current (hit-path shortcut)."""
    invalid: frozenset[str] = field(default=frozenset(), init=False)
    """Sections dropped by ``view.invalidate(key, section=...)``: rebuilt in line on the next
    read, whatever their revisions."""
    hit: Read = field(init=False)
    """The prebuilt result of a hit on this entry, so a hit allocates nothing."""
    memo: dict[str, Any] = field(default_factory=dict, init=False)
    """Per-entry memos of integrations (e.g. the encoded HTTP headers of a hit)."""

    def __post_init__(self) -> None:
        vector: dict[str, Revision] = {}
        for name, part in self.sections.items():
            for source, rev in zip(self.sources[name], part.fingerprint, strict=True):
                old = vector.get(source)
                vector[source] = rev if old is None or is_older(rev, old) else old
        self.vector = vector
        self.chunks = splice_chunks([part.body for part in self.sections.values()])
        self.etag = compute_etag(self.view, self.key, vector, self.version)
        self.revision = format_revision(vector)
        self.built_at = min(p.built_at for p in self.sections.values())
        self.built_mono = min(p.built_mono for p in self.sections.values())
        self.confirmed_mono = self.built_mono
        self.hit = Read("hit", self)

    @property
    def body(self) -> bytes:
        """The encoded body: :attr:`chunks` joined (on first use, then kept)."""
        body = self._body
        if body is None:
            chunks = self.chunks
            body = self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return body

    @property
    def joined(self) -> bytes | None:
        """:attr:`body` if it needs no join (already joined, or one piece), else ``None``."""
        body = self._body
        if body is None and len(self.chunks) <= 1:
            body = self._body = self.chunks[0] if self.chunks else b""
        return body

    @property
    def body_size(self) -> int:
        """The length of :attr:`body` in bytes (without joining it)."""
        body = self._body
        return len(body) if body is not None else sum(map(len, self.chunks))

    @property
    def size(self) -> int:
        """Bytes this entry holds (the body counted once per section and once merged)."""
        parts = sum(body_size(p.body) for p in self.sections.values())
        return parts + (self.body_size if len(self.sections) > 1 else 0)

    def fingerprints(self) -> dict[str, Fingerprint]:
        """The fingerprint of each section."""
        return {name: part.fingerprint for name, part in self.sections.items()}

    def is_older_than(self, other: Entry) -> bool:
        """Whether some source of this entry is at an older revision than in ``other``.

        A store uses it as compare-and-set: it never replaces ``other`` with an older entry.
        """
        theirs = other.vector
        return any(
            source in theirs and is_older(rev, theirs[source])
            for source, rev in self.vector.items()
        )


class Read:
    """The result of reading a view: status and the encoded entry served."""

    __slots__ = ("_value", "collapsed", "entry", "error", "reason", "status")

    def __init__(
        self,
        status: Status,
        entry: Entry,
        *,
        collapsed: bool = False,
        error: BaseException | None = None,
        reason: str | None = None,
    ) -> None:
        self.status: Status = status
        self.entry = entry
        self.collapsed = collapsed
        """Whether this read waited on a build another read started."""
        self.error = error
        """For ``error-stale``: why the build failed."""
        self.reason = reason
        """Why a ``stale``, ``section`` or ``miss`` read was not a hit, when it was not that a
        source changed: ``"expired"`` (older than the policy's ``max_age``)."""
        self._value: Any = _UNSET

    @property
    def body(self) -> bytes:
        """The encoded JSON body."""
        return self.entry.body

    @property
    def etag(self) -> str:
        """The weak ETag of the entry served."""
        return self.entry.etag

    @property
    def revision(self) -> str:
        """The revision vector of the entry served, as a header value."""
        return self.entry.revision

    @property
    def built_at(self) -> float:
        """Wall-clock time when the oldest section of the entry served was built."""
        return self.entry.built_at

    @property
    def value(self) -> Any:
        """The decoded value (decoded once, on first access)."""
        if self._value is _UNSET:
            self._value = orjson.loads(self.entry.body)
        return self._value

    def __repr__(self) -> str:
        return f"Read({self.status!r}, view={self.entry.view!r}, revision={self.revision!r})"


_UNSET: Any = object()
