"""The hub's strict JSON and its 422 body, which encodes whatever it echoes back."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given
from hypothesis import strategies as st

from freshkeep.demo.errors import json_safe, strict_json, validation_error

ODD: list[Any] = [
    float("nan"),
    float("inf"),
    -float("inf"),
    "\ud800",
    "a\udfffb",
    b"\xff\xfe",
    bytearray(b"ok"),
    ValueError("bad \ud800"),
    Decimal("1.5"),
    {1, 2},
    (1, "x"),
    {"\ud800": float("nan"), 3: [b"\x80"]},
    object(),
    10**40,
]


@pytest.mark.parametrize("value", ODD, ids=repr)
def test_json_safe_always_encodes(value: Any) -> None:
    safe = json_safe(value)
    text = json.dumps(safe, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate left


def test_json_safe_names_what_it_replaced() -> None:
    assert json_safe(float("nan")) == "NaN"
    assert json_safe(-float("inf")) == "-Infinity" and json_safe(float("inf")) == "Infinity"
    assert json_safe("a\ud800b") == "a\\ud800b"
    assert json_safe(b"\xffok") == "\\xffok"
    assert json_safe({"k": (1, 2.5, None, True)}) == {"k": [1, 2.5, None, True]}
    assert json_safe(10**40) == 10**40


@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text() | st.binary(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=20,
    )
)
def test_json_safe_encodes_anything(value: Any) -> None:
    json.dumps(json_safe(value), allow_nan=False).encode("utf-8")


async def test_a_422_echoing_odd_input_encodes() -> None:
    errors = [
        {"type": "x", "loc": ("body", "a"), "msg": "m", "input": value, "ctx": {"error": value}}
        for value in ODD
    ]
    response = await validation_error(None, RequestValidationError(errors))  # type: ignore[arg-type]
    assert response.status_code == 422
    body = json.loads(response.body)
    assert [e["loc"] for e in body["detail"]] == [["body", "a"]] * len(ODD)


@pytest.mark.parametrize(
    "text",
    [b"NaN", b"[1, Infinity]", b'{"a": -Infinity}', b"1e400", b'"\\ud800"', b'"\xff"', b"{", b""],
)
def test_strict_json_refuses_what_json_is_not(text: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        strict_json(text)


def test_strict_json_keeps_large_integers_exact() -> None:
    assert strict_json(b'{"id": 123456789012345678901234567890}') == {
        "id": 123456789012345678901234567890
    }
    assert strict_json(b'[1.5, "\\ud83d\\ude80", 18446744073709551615]') == [
        1.5,
        "\U0001f680",
        2**64 - 1,
    ]
    assert math.isfinite(strict_json(b"1e308"))
