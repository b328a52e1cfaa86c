"""Bodies kept in chunks: spliced, stored and decoded, they are the plain encoding, byte for
byte."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from freshkeep.core.codec import decode_entry, encode_entry
from freshkeep.core.entry import (
    Body,
    Chunks,
    Entry,
    SectionEntry,
    body_bytes,
    splice,
    splice_chunks,
)
from freshkeep.stores.memory import MemoryStore

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> Chunks:
    """``data`` cut at random places (empty pieces included)."""
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *points, len(data)]
    return Chunks(data[a:b] for a, b in itertools.pairwise(bounds))


@st.composite
def sections(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[Body]]:
    """Objects with disjoint keys, each encoded as bytes or as chunks."""
    count = draw(st.integers(1, 4))
    values = []
    for i in range(count):
        obj = draw(st.dictionaries(st.text(max_size=3), json_values, max_size=3))
        values.append({f"s{i}.{k}": v for k, v in obj.items()})
    bodies: list[Body] = []
    for value in values:
        data = orjson.dumps(value)
        bodies.append(draw(cut(data)) if draw(st.booleans()) else data)
    return values, bodies


def merged(values: list[dict[str, Any]]) -> bytes:
    out: dict[str, Any] = {}
    for v in values:
        out.update(v)
    return orjson.dumps(out)


@given(sections())
def test_spliced_chunks_are_the_plain_encoding(
    case: tuple[list[dict[str, Any]], list[Body]],
) -> None:
    values, bodies = case
    plain = merged(values) if len(values) > 1 else orjson.dumps(values[0])
    assert b"".join(splice_chunks(bodies)) == plain
    assert splice(bodies) == plain
    assert splice([body_bytes(b) for b in bodies]) == plain


@given(sections())
def test_an_entry_of_chunks_is_served_encoded_and_decoded_as_plain(
    case: tuple[list[dict[str, Any]], list[Body]],
) -> None:
    _, bodies = case
    parts = {f"s{i}": SectionEntry(b, (i,), 1_700_000_000.0, 0.0) for i, b in enumerate(bodies)}
    sources = {name: (f"table:{name}",) for name in parts}
    entry = Entry("v", None, parts, sources)
    plain = {
        f"s{i}": SectionEntry(body_bytes(b), (i,), 1_700_000_000.0, 0.0)
        for i, b in enumerate(bodies)
    }
    reference = Entry("v", None, plain, sources)
    assert all(type(c) is bytes for c in entry.chunks)
    assert b"".join(entry.chunks) == reference.body
    assert entry.body_size == len(reference.body) and entry.size == reference.size
    assert entry.body == reference.body and entry.etag == reference.etag
    back = decode_entry(encode_entry(entry, secret=b"k"), secret=b"k")
    assert back.body == reference.body and back.etag == entry.etag
    assert encode_entry(entry) == encode_entry(reference)
    for name, part in back.sections.items():
        assert part.body == parts[name].body


def test_chunks_equal_their_bytes_and_join_once() -> None:
    c = Chunks([b'{"a":', b"", b"1}"])
    assert c.parts == (b'{"a":', b"1}") and c.size == 7
    assert c == b'{"a":1}' and b'{"a":1}' == c and c == Chunks([b'{"a":1}'])
    assert c != b'{"a":2}' and c != Chunks([b'{"a":2}'])
    assert c.join() is c.join()
    assert hash(c) == hash(b'{"a":1}')


def test_an_entry_body_is_joined_on_first_use_only() -> None:
    body = Chunks([b'{"a":1', b',"b":2}'])
    entry = Entry("v", None, {"main": SectionEntry(body, (1,), 0.0, 0.0)}, {"main": ("table:a",)})
    assert entry.chunks == body.parts  # nothing joined nor copied
    assert entry.body is entry.body and entry.body == b'{"a":1,"b":2}'


def test_a_store_counts_an_entry_of_chunks_as_its_bytes() -> None:
    store = MemoryStore()
    data = b'{"a":1}'
    entry = Entry(
        "v",
        None,
        {"main": SectionEntry(Chunks([data[:3], data[3:]]), (1,), 0.0, 0.0)},
        {"main": ("table:a",)},
    )
    store.put("k", entry)
    assert store.bytes == len(data)
    store.delete("k")
    assert store.bytes == 0
