"""Entries as bytes, for a store shared between processes (never pickle: design rule 6).

The format (version 1)::

    b"FK1"  flag  header-length  header  bodies  [mac]

- ``flag`` is ``b"S"`` for a signed entry, ``b"U"`` for an unsigned one;
- ``header-length`` is 4 bytes, big-endian; the header is JSON (orjson): the view, the key
  identity, the view's version, the ETag and the revision vector (read by a store's
  compare-and-set without decoding the bodies), and per section its name, sources,
  fingerprint, wall-clock ``built_at`` and body length;
- ``bodies`` are the sections' encoded JSON bodies, concatenated byte-exact (not re-encoded);
- ``mac`` (signed entries only) is the HMAC-SHA256 of everything before it.

Decoding checks everything and raises :class:`~freshkeep.exceptions.CorruptEntryError` for
anything wrong: bad magic, truncated data, a header of the wrong shape, a fingerprint that does
not fit its sources, an ETag or revision vector that the entry does not reproduce, and, when a
secret is configured, an unsigned entry or a signature that does not match.

Key identities: ``None``, ``bool``, ``int``, ``float``, ``str`` and tuples of them round-trip
exactly (JSON arrays decode as tuples). Other keys orjson encodes (UUIDs, datetimes, enums,
dataclasses) come back as their JSON form; their ETag (and store key) is the same in every
process, because both are computed from that JSON.

Monotonic time does not cross processes: a decoded section's ``built_mono`` is the local
monotonic clock minus its wall-clock age; an entry from the future (clock skew) has age 0.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

import orjson

from freshkeep.core.clock import SYSTEM_CLOCK, Clock
from freshkeep.core.entry import Chunks, Entry, SectionEntry, body_size
from freshkeep.core.revision import Revision
from freshkeep.exceptions import CorruptEntryError, EncodeError

MAGIC = b"FK1"
"""The first bytes of every encoded entry (format version 1)."""
SIGNED = b"S"
UNSIGNED = b"U"
MAC_SIZE = hashlib.sha256().digest_size
_PREFIX = len(MAGIC) + 1 + 4
_OPTIONS = orjson.OPT_NON_STR_KEYS


def identity_json(identity: object) -> bytes:
    """The JSON of a key identity (the same bytes :func:`~freshkeep.core.entry.compute_etag`
    hashes); raises :class:`~freshkeep.exceptions.EncodeError` if it has none."""
    try:
        return orjson.dumps(identity, option=_OPTIONS)
    except TypeError as exc:
        raise EncodeError(
            f"key {identity!r} cannot be encoded as JSON for a shared store: {exc}"
        ) from exc


def _identity_from_json(value: Any) -> object:
    if isinstance(value, list):
        return tuple(_identity_from_json(v) for v in value)
    return value


def encode_entry(entry: Entry, *, secret: bytes | None = None) -> bytes:
    """Encode ``entry`` (signed with HMAC-SHA256 when ``secret`` is given).

    Raises :class:`~freshkeep.exceptions.EncodeError` when its key identity or revisions are
    not JSON-encodable.
    """
    sections = []
    bodies: list[bytes] = []
    for name, part in entry.sections.items():
        body = part.body
        srcs, fingerprint = list(entry.sources[name]), list(part.fingerprint)
        sections.append([name, srcs, fingerprint, part.built_at, body_size(body)])
        if isinstance(body, Chunks):
            bodies += body.parts
        else:
            bodies.append(body)
    header_obj = {
        "view": entry.view,
        "key": orjson.Fragment(identity_json(entry.key)),
        "version": entry.version,
        "etag": entry.etag,
        "vec": entry.vector,
        "sections": sections,
    }
    try:
        header = orjson.dumps(header_obj, option=_OPTIONS)
    except TypeError as exc:
        raise EncodeError(f"entry of view {entry.view!r} cannot be encoded: {exc}") from exc
    flag = UNSIGNED if secret is None else SIGNED
    data = b"".join([MAGIC, flag, len(header).to_bytes(4, "big"), header, *bodies])
    if secret is not None:
        data += hmac.new(secret, data, hashlib.sha256).digest()
    return data


def decode_entry(data: bytes, *, secret: bytes | None = None, clock: Clock = SYSTEM_CLOCK) -> Entry:
    """Decode and verify an entry written by :func:`encode_entry`.

    With ``secret``, only entries signed with it are accepted. Without one, a signed entry is
    accepted unverified. Raises :class:`~freshkeep.exceptions.CorruptEntryError`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CorruptEntryError(f"entry is {type(data).__name__}, not bytes")
    header, bodies = _split(bytes(data), secret)
    try:
        return _build(header, bodies, clock)
    except CorruptEntryError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CorruptEntryError(f"entry header is malformed: {exc}") from exc


def _split(data: bytes, secret: bytes | None) -> tuple[dict[str, Any], bytes]:
    if len(data) < _PREFIX or data[: len(MAGIC)] != MAGIC:
        raise CorruptEntryError("not a freshkeep entry (bad magic)")
    flag = data[len(MAGIC) : len(MAGIC) + 1]
    if flag == SIGNED:
        if len(data) < _PREFIX + MAC_SIZE:
            raise CorruptEntryError("signed entry is truncated")
        payload, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
        if secret is not None:
            expected = hmac.new(secret, payload, hashlib.sha256).digest()
            if not hmac.compare_digest(mac, expected):
                raise CorruptEntryError("entry signature does not match (tampered or other key)")
    elif flag == UNSIGNED:
        if secret is not None:
            raise CorruptEntryError("entry is unsigned but a secret is configured")
        payload = data
    else:
        raise CorruptEntryError(f"unknown entry flag {flag!r}")
    size = int.from_bytes(payload[len(MAGIC) + 1 : _PREFIX], "big")
    if _PREFIX + size > len(payload):
        raise CorruptEntryError("entry header is truncated")
    try:
        header = orjson.loads(payload[_PREFIX : _PREFIX + size])
    except orjson.JSONDecodeError as exc:
        raise CorruptEntryError(f"entry header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CorruptEntryError("entry header is not an object")
    return header, payload[_PREFIX + size :]


def _revision(value: Any) -> Revision:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise CorruptEntryError(f"revision {value!r} is neither an int nor a str")


def _text(header: dict[str, Any], field: str) -> str:
    value = header[field]
    if not isinstance(value, str):
        raise CorruptEntryError(f"entry {field} is not a string")
    return value


def _build(header: dict[str, Any], bodies: bytes, clock: Clock) -> Entry:
    view = _text(header, "view")
    version = _text(header, "version")
    etag = _text(header, "etag")
    raw_sections = header["sections"]
    if not isinstance(raw_sections, list) or not raw_sections:
        raise CorruptEntryError("entry has no sections")
    now_wall = clock.time()
    now_mono = clock.monotonic()
    sections: dict[str, SectionEntry] = {}
    sources: dict[str, tuple[str, ...]] = {}
    offset = 0
    for raw in raw_sections:
        if not isinstance(raw, list) or len(raw) != 5:
            raise CorruptEntryError("entry section is not [name, sources, fp, built_at, size]")
        name, srcs, fingerprint, built_at, size = raw
        if not isinstance(name, str) or name in sections:
            raise CorruptEntryError(f"entry section name {name!r} is invalid or repeated")
        if not isinstance(srcs, list) or not all(isinstance(s, str) for s in srcs):
            raise CorruptEntryError(f"sources of section {name!r} are not strings")
        if not isinstance(fingerprint, list) or len(fingerprint) != len(srcs):
            raise CorruptEntryError(f"fingerprint of section {name!r} does not fit its sources")
        if (
            not isinstance(built_at, int | float)
            or isinstance(built_at, bool)
            or not math.isfinite(built_at)
        ):
            raise CorruptEntryError(f"built_at of section {name!r} is not a time")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CorruptEntryError(f"body size of section {name!r} is invalid")
        if offset + size > len(bodies):
            raise CorruptEntryError(f"body of section {name!r} is truncated")
        age = max(0.0, now_wall - built_at)  # from the future (clock skew): age 0
        sections[name] = SectionEntry(
            bodies[offset : offset + size],
            tuple(_revision(r) for r in fingerprint),
            float(built_at),
            now_mono - age,
        )
        sources[name] = tuple(srcs)
        offset += size
    if offset != len(bodies):
        raise CorruptEntryError("entry has bytes after its bodies")
    entry = Entry(view, _identity_from_json(header["key"]), sections, sources, version)
    if entry.etag != etag:
        raise CorruptEntryError("entry ETag does not match its contents")
    vec = header["vec"]
    if not isinstance(vec, dict) or entry.vector != vec:
        raise CorruptEntryError("entry revision vector does not match its fingerprints")
    return entry


__all__ = [
    "MAGIC",
    "decode_entry",
    "encode_entry",
    "identity_json",
]
