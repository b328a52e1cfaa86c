"""Entries encode to bytes and back exactly, and anything else decodes to an error."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import sys
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshkeep.core.codec import MAGIC, decode_entry, encode_entry
from freshkeep.core.entry import Entry, SectionEntry, compute_etag
from freshkeep.exceptions import (
    ConfigurationError,
    CorruptEntryError,
    EncodeError,
    MissingDependencyError,
    StoreError,
)
from freshkeep.testing import FakeClock

SECRET = b"s3cret"


def make_entry(
    key: object = None,
    revs: dict[str, Any] | None = None,
    *,
    view: str = "summary",
    built_at: float = 1_700_000_000.0,
    version: str = "",
) -> Entry:
    revs = {"table:a": 1} if revs is None else revs
    sources = tuple(sorted(revs))
    fp = tuple(revs[s] for s in sources)
    part = SectionEntry(b'{"n":1}', fp, built_at, 0.0)
    return Entry(view, key, {"main": part}, {"main": sources}, version)


def assert_same(a: Entry, b: Entry) -> None:
    assert b.view == a.view and b.version == a.version
    assert b.body == a.body
    assert b.etag == a.etag
    assert b.revision == a.revision
    assert b.vector == a.vector
    assert b.fingerprints() == a.fingerprints()
    assert list(b.sections) == list(a.sections)
    assert dict(b.sources) == {n: tuple(a.sources[n]) for n in a.sections}
    for name, part in a.sections.items():
        assert b.sections[name].body == part.body
        assert b.sections[name].built_at == part.built_at


# -- strategies -------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
identities = st.recursive(scalars, lambda inner: st.tuples(inner, inner) | st.tuples(inner))
revisions = st.integers(min_value=0, max_value=2**63 - 1) | st.text(max_size=12)
source_names = st.text(min_size=1, max_size=10)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    names = draw(st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True))
    sections: dict[str, SectionEntry] = {}
    sources: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        srcs = tuple(draw(st.lists(source_names, max_size=4, unique=True)))
        fp = tuple(draw(revisions) for _ in srcs)
        value = draw(
            st.dictionaries(
                st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(), max_size=3
            )
        )
        body = orjson.dumps({f"{i}:{k}": v for k, v in value.items()})
        built_at = draw(st.floats(min_value=0, max_value=4e9, allow_nan=False))
        sections[name] = SectionEntry(body, fp, built_at, 0.0)
        sources[name] = srcs
    return Entry(
        draw(st.text(min_size=1, max_size=10)),
        draw(identities),
        sections,
        sources,
        draw(st.text(max_size=5)),
    )


@settings(max_examples=200, deadline=None)
@given(entries(), st.sampled_from([None, SECRET]))
def test_round_trip(entry: Entry, secret: bytes | None) -> None:
    back = decode_entry(encode_entry(entry, secret=secret), secret=secret, clock=FakeClock())
    assert_same(entry, back)
    assert back.key == entry.key


@settings(max_examples=200, deadline=None)
@given(entries(), st.data())
def test_any_single_byte_flip_of_a_signed_entry_is_rejected(
    entry: Entry, data: st.DataObject
) -> None:
    raw = bytearray(encode_entry(entry, secret=SECRET))
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(CorruptEntryError):
        decode_entry(bytes(raw), secret=SECRET)


# -- keys and ETags -----------------------------------------------------------------------------


def test_tuple_keys_come_back_as_tuples_with_the_same_etag() -> None:
    entry = make_entry(("alice", (1, 2.5), None))
    back = decode_entry(encode_entry(entry))
    assert back.key == ("alice", (1, 2.5), None)
    assert hash(back.key) == hash(entry.key)
    assert back.etag == entry.etag


def test_other_json_keys_keep_their_etag() -> None:
    key = uuid.UUID(int=7)
    entry = make_entry(key)
    back = decode_entry(encode_entry(entry))
    assert back.key == str(key)
    assert back.etag == entry.etag == compute_etag("summary", str(key), {"table:a": 1})


def test_a_key_without_json_form_cannot_be_encoded() -> None:
    with pytest.raises(EncodeError, match="frozenset"):
        encode_entry(make_entry(frozenset({1})))


def test_int_and_str_revisions_stay_apart() -> None:
    back = decode_entry(encode_entry(make_entry(revs={"t:a": 3, "t:b": "3"})))
    assert back.vector == {"t:a": 3, "t:b": "3"}


# -- time -------------------------------------------------------------------------------------


def test_built_mono_is_the_local_clock_minus_the_wall_age() -> None:
    clock = FakeClock(wall=1_000.0)
    clock.advance(500.0)  # monotonic 500, wall 1500
    back = decode_entry(encode_entry(make_entry(built_at=1_480.0)), clock=clock)
    assert back.built_at == 1_480.0
    assert back.built_mono == pytest.approx(480.0)
    assert back.confirmed_mono == back.built_mono


def test_an_entry_from_the_future_has_age_zero() -> None:
    clock = FakeClock(wall=1_000.0)
    back = decode_entry(encode_entry(make_entry(built_at=9_999.0)), clock=clock)
    assert back.built_mono == clock.monotonic()


# -- signatures -------------------------------------------------------------------------------


def test_an_unsigned_entry_is_rejected_when_a_secret_is_set() -> None:
    with pytest.raises(CorruptEntryError, match="unsigned"):
        decode_entry(encode_entry(make_entry()), secret=SECRET)


def test_a_wrong_secret_is_rejected() -> None:
    with pytest.raises(CorruptEntryError, match="signature"):
        decode_entry(encode_entry(make_entry(), secret=b"other"), secret=SECRET)


def test_a_signed_entry_is_read_unverified_without_a_secret() -> None:
    entry = make_entry()
    assert decode_entry(encode_entry(entry, secret=SECRET)).etag == entry.etag


def test_a_resigned_forgery_needs_the_secret() -> None:
    raw = encode_entry(make_entry(revs={"t:a": 1}), secret=b"attacker")
    assert raw[: len(MAGIC)] == MAGIC
    with pytest.raises(CorruptEntryError):
        decode_entry(raw, secret=SECRET)


# -- garbage ----------------------------------------------------------------------------------


def frame(header: Any, bodies: bytes = b"", *, secret: bytes | None = None) -> bytes:
    raw = orjson.dumps(header) if not isinstance(header, bytes) else header
    data = MAGIC + (b"S" if secret else b"U") + len(raw).to_bytes(4, "big") + raw + bodies
    if secret:
        data += hmac.new(secret, data, hashlib.sha256).digest()
    return data


def good_header(**changes: Any) -> dict[str, Any]:
    header = orjson.loads(encode_entry(make_entry())[8:-7])
    header.update(changes)
    return header


def test_the_frame_helper_matches_the_encoder() -> None:
    assert frame(good_header(), b'{"n":1}') == encode_entry(make_entry())
    signed = frame(good_header(), b'{"n":1}', secret=SECRET)
    assert signed == encode_entry(make_entry(), secret=SECRET)


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps({"view": "summary"}),
        b"",
        b"FK1",
        b"FK1X\x00\x00\x00\x00",
        b"FK1U\x00\x00\x00\xff{}",
        frame(b"not json"),
        frame([1, 2]),
        frame(good_header(), b'{"n":1}extra'),
        frame(good_header(), b'{"n"'),
        frame(good_header(sections=[]), b""),
        frame(good_header(sections=[["main", ["table:a"], [], 1.0, 7]]), b'{"n":1}'),
        frame(good_header(sections=[["main", ["table:a"], [1.5], 1.0, 7]]), b'{"n":1}'),
        frame(good_header(sections=[["main", ["table:a"], [True], 1.0, 7]]), b'{"n":1}'),
        frame(good_header(sections=[["main", ["table:a"], [1], "x", 7]]), b'{"n":1}'),
        frame(good_header(sections=[["main", ["table:a"], [1], 1.0, -1]]), b'{"n":1}'),
        frame(good_header(sections=[["main", [3], [1], 1.0, 7]]), b'{"n":1}'),
        frame(good_header(sections=[["main", ["table:a"], [1]]]), b'{"n":1}'),
        frame(good_header(etag='W/"0"'), b'{"n":1}'),
        frame(good_header(vec={"table:a": 9}), b'{"n":1}'),
        frame(good_header(view=1), b'{"n":1}'),
        frame({"view": "summary"}, b'{"n":1}'),
    ],
)
def test_garbage_is_a_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntryError) as info:
        decode_entry(data)
    assert isinstance(info.value, StoreError)


def test_a_pickle_is_never_unpickled() -> None:
    planted = pickle.dumps(("a", 1))
    with pytest.raises(CorruptEntryError, match="magic"):
        decode_entry(planted, secret=SECRET)


def test_non_bytes_are_corrupt() -> None:
    with pytest.raises(CorruptEntryError):
        decode_entry("FK1U", secret=None)  # type: ignore[arg-type]


# -- without the redis extra ------------------------------------------------------------------


def test_store_urls_without_the_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("redis", "redis.asyncio", "redis.asyncio.retry", "redis.backoff"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("freshkeep.stores.redis", "freshkeep.stores.redis_lock"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from freshkeep.stores.base import store_from_url

    assert store_from_url("memory://") is None
    with pytest.raises(MissingDependencyError, match=r"freshkeep\[redis\]"):
        store_from_url("redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match="'memcached'"):
        store_from_url("memcached://127.0.0.1")
