"""Bus messages carry their send time; a bus reports how long the last one took to arrive."""

from __future__ import annotations

import time

import orjson
import pytest

from freshkeep.buses.base import RemoteBus
from freshkeep.buses.messages import decode, decode_message, encode


def test_a_message_carries_its_send_time() -> None:
    before = time.time()
    revisions, origin, sent = decode_message(encode({"table:a": 3}, "k1"))
    assert (revisions, origin) == ({"table:a": 3}, "k1")
    assert sent is not None and before <= sent <= time.time()
    assert decode(encode({"table:a": 3}, "k1")) == ({"table:a": 3}, "k1")


def test_a_trigger_message_has_no_send_time_and_a_bad_one_is_malformed() -> None:
    assert decode_message(b'{"o": "trigger", "r": {"table:a": 1}}')[2] is None
    for sent in ('"soon"', "true", "[1]"):
        with pytest.raises(ValueError, match="send time"):
            decode_message(b'{"o": "x", "r": {}, "t": ' + sent.encode() + b"}")


def test_the_bus_reports_the_delivery_time_of_the_last_message() -> None:
    bus = RemoteBus("test")
    seen: list[dict[str, object]] = []
    bus.subscribe(lambda revisions, origin: seen.append(dict(revisions)))
    assert bus.snapshot().last_delivery_ms is None
    bus._deliver(orjson.dumps({"o": "other", "r": {"table:a": 1}, "t": time.time() - 0.25}))
    delay = bus.snapshot().last_delivery_ms
    assert delay is not None and 250 <= delay < 10_000
    bus._deliver(b'{"o": "trigger", "r": {"table:a": 2}}')  # no send time: the figure stays
    assert bus.snapshot().last_delivery_ms == delay
    bus._deliver(b'{"o": "x", "r": {}, "t": "late"}')
    assert bus.snapshot().malformed == 1
    assert seen == [{"table:a": 1}, {"table:a": 2}]
