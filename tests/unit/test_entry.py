"""Encoding and the derived parts of an entry."""

from __future__ import annotations

from decimal import Decimal

import pytest

from freshkeep import EncodeError
from freshkeep.core.entry import compute_etag, encode, format_revision, splice


def test_decimals_from_the_database_encode_as_numbers() -> None:
    assert encode({"sum": Decimal("12"), "avg": Decimal("1.5")}) == b'{"sum":12,"avg":1.5}'


def test_unencodable_values_name_the_type() -> None:
    with pytest.raises(EncodeError, match="set"):
        encode({"x": {1, 2}})


def test_bytes_are_taken_as_encoded() -> None:
    assert encode(b'{"a":1}') == b'{"a":1}'


def test_splice_merges_objects_and_skips_empty_ones() -> None:
    assert splice([b'{"a":1}', b"{}", b'{"b":[2]}']) == b'{"a":1,"b":[2]}'


def test_etag_and_revision_do_not_depend_on_order() -> None:
    a = compute_etag("v", None, {"t:a": 1, "t:b": 2})
    b = compute_etag("v", None, {"t:b": 2, "t:a": 1})
    assert a == b and a != compute_etag("v", "k", {"t:a": 1, "t:b": 2})
    assert format_revision({"t:b": 2, "t:a": 1}) == "t:a=1,t:b=2"
