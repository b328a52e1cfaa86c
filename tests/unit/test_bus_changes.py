"""Bus messages carry a commit's changed rows: exactly, within a bound, or not at all; a
keeper records another process's rows so its delta sections apply them, and rebuilds when a
message has none or one was lost."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from freshkeep import Keeper, Section
from freshkeep.buses.base import RemoteBus
from freshkeep.buses.messages import decode_full, encode
from freshkeep.buses.postgres import MAX_PAYLOAD, PostgresBus
from freshkeep.core.change_wire import CommitChanges, changes_from_wire, changes_to_wire
from freshkeep.core.changes import Change
from freshkeep.testing import FakeClock

from .test_view_deltas import ROWS, Counter

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])),
    st.dates(),
    st.times(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.binary(max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers(-100, 100) | st.text(max_size=5)),
)
_images = st.dictionaries(st.text(min_size=1, max_size=8), _values, max_size=5)


@st.composite
def _changes(draw: st.DrawFn) -> Change:
    op = draw(st.sampled_from(["insert", "update", "delete"]))
    before = None if op == "insert" else draw(_images)
    after = None if op == "delete" else draw(_images)
    return Change(draw(st.sampled_from(["table:a", "table:b"])), op, before, after)


@settings(max_examples=200, deadline=None)
@given(st.lists(_changes(), max_size=6))
def test_changed_rows_travel_exactly(changes: list[Change]) -> None:
    wire = orjson.loads(orjson.dumps(changes_to_wire(["table:a", "table:b"], changes)))
    back = changes_from_wire(wire)
    assert back.known == {"table:a", "table:b"}
    assert list(back.changes) == changes
    for sent, got in zip(changes, back.changes, strict=True):
        for a, b in ((sent.before, got.before), (sent.after, got.after)):
            assert {k: type(v) for k, v in (a or {}).items()} == {
                k: type(v) for k, v in (b or {}).items()
            }


def _commit(*changes: Change) -> CommitChanges:
    return CommitChanges(frozenset({ROWS}), changes)


def test_rows_that_cannot_travel_exactly_or_fit_are_left_out() -> None:
    ok = _commit(Change(ROWS, "insert", None, {"id": 1, "at": datetime(2026, 1, 1, tzinfo=UTC)}))
    assert decode_full(encode({ROWS: 2}, "k", ok))[3] == ok
    for bad in (float("nan"), object(), Decimal("Infinity"), {"at": date(2026, 1, 1)}):
        message = encode({ROWS: 2}, "k", _commit(Change(ROWS, "insert", None, {"v": bad})))
        assert decode_full(message)[:2] == ({ROWS: 2}, "k")
        assert decode_full(message)[3] is None
    big = _commit(*(Change(ROWS, "insert", None, {"id": i, "s": "x" * 100}) for i in range(50)))
    assert decode_full(encode({ROWS: 2}, "k", big, limit=1000))[3] is None
    assert decode_full(encode({ROWS: 2}, "k", big, limit=100_000))[3] == big
    assert b'"c"' not in encode({ROWS: 2}, "k", CommitChanges(frozenset(), ()))
    owned = CommitChanges(frozenset({ROWS}), ok.changes, {ROWS: 0})  # triggers bumped 1 too
    assert decode_full(encode({ROWS: 2}, "k", owned))[3] == owned


def test_malformed_rows_are_no_rows_and_the_revisions_still_arrive() -> None:
    for c in (
        '{"k": "x", "w": []}',
        '{"k": [], "w": [["t", "upsert", null, {}]]}',
        '{"k": [], "w": [["t", "insert", {}, {}]]}',
        '{"k": [], "w": [["t", "insert", null, {"a": ["zz", "1"]}]]}',
        '{"k": [], "w": [], "s": {"t": "1"}}',
    ):
        message = b'{"o": "x", "r": {"table:a": 1}, "c": ' + c.encode() + b"}"
        assert decode_full(message) == ({"table:a": 1}, "x", None, None)


def test_a_notification_carries_rows_only_when_the_whole_message_fits() -> None:
    bus = PostgresBus("postgresql://127.0.0.1/none")
    small = _commit(Change(ROWS, "update", {"id": 1, "n": 1}, {"id": 1, "n": 2}))
    (one,) = bus._payloads({ROWS: 5}, "k", small)
    assert decode_full(one)[3] == small
    big = _commit(*(Change(ROWS, "insert", None, {"id": i, "s": "y" * 200}) for i in range(40)))
    payloads = bus._payloads({ROWS: 5}, "k", big)
    assert all(len(p) <= MAX_PAYLOAD and decode_full(p)[3] is None for p in payloads)
    assert {s: r for p in payloads for s, r in decode_full(p)[0].items()} == {ROWS: 5}


class Peer:
    """Another process's commits to ``rows``, as its bus messages arrive here."""

    def __init__(self, bus: RemoteBus, counter: Counter) -> None:
        self.bus, self.counter, self.rev = bus, counter, 0

    def commit(self, rid: int, n: int, *, rows: bool = True, lost: bool = False) -> None:
        old = self.counter.rows.get(rid)
        self.counter.rows[rid] = n
        self.rev += 1
        before = None if old is None else {"id": rid, "n": old}
        change = Change(ROWS, "insert" if old is None else "update", before, {"id": rid, "n": n})
        if not lost:
            sent = _commit(change) if rows else None
            self.bus._deliver(encode({ROWS: self.rev}, "peer", sent))


def _setup() -> tuple[Any, Keeper, Counter, Peer]:
    bus = RemoteBus("test")
    keeper = Keeper(clock=FakeClock(), bus=bus)
    counter = Counter()
    view = keeper.view("v", sections={"s": Section(counter.build, [ROWS], apply=counter.apply)})
    return view, keeper, counter, Peer(bus, counter)


async def test_another_process_rows_are_applied_and_a_message_without_rows_rebuilds() -> None:
    view, keeper, counter, peer = _setup()
    assert (await view.get()).status == "miss" and counter.builds == 1
    peer.commit(1, 5)
    peer.commit(2, 7)
    read = await view.get()
    assert read.reason == "delta" and read.body == b'{"sum":12}' and counter.builds == 1
    snap = keeper.snapshot()
    assert snap.remote_changes == 2 and snap.views["v"].deltas == {"s": 1}
    peer.commit(1, 6, rows=False)  # raw SQL or a trigger there: no rows
    assert (await view.get()).body == b'{"sum":13}' and counter.builds == 2
    assert keeper.snapshot().views["v"].delta_fallbacks == {"gap": 1}


async def test_a_lost_message_is_a_gap_even_when_the_next_one_has_rows() -> None:
    view, keeper, counter, peer = _setup()
    await view.get()
    peer.commit(1, 5, lost=True)
    peer.commit(2, 7)
    assert (await view.get()).body == b'{"sum":12}' and counter.builds == 2
    assert keeper.snapshot().views["v"].delta_fallbacks == {"gap": 1}
    peer.commit(2, 8)  # after the rebuild, rows apply again
    assert (await view.get()).body == b'{"sum":13}' and counter.builds == 2


async def test_a_keeper_skips_its_own_rows_and_sources_the_message_does_not_vouch_for() -> None:
    view, keeper, counter, peer = _setup()
    await view.get()
    counter.rows[1] = 4
    change = Change(ROWS, "insert", None, {"id": 1, "n": 4})
    # the rows of a source the sender did not know all of are not taken
    peer.bus._deliver(encode({ROWS: 1}, "peer", CommitChanges(frozenset({"table:x"}), (change,))))
    peer.rev = 1
    assert (await view.get()).body == b'{"sum":4}' and counter.builds == 2
    own = encode({ROWS: 2}, keeper.instance_id, _commit(change))
    peer.bus._deliver(own)
    assert keeper.snapshot().remote_changes == 1


def test_the_bound_of_a_message_with_rows_is_a_setting() -> None:
    from freshkeep.buses import bus_from_url
    from freshkeep.settings import Settings

    bus = bus_from_url("postgresql://127.0.0.1/none", settings=Settings(bus_max_changes_bytes=0))
    assert isinstance(bus, PostgresBus) and bus.max_changes_bytes == 0
    row = _commit(Change(ROWS, "update", {"id": 1, "n": 1}, {"id": 1, "n": 2}))
    assert [decode_full(p)[3] for p in bus._payloads({ROWS: 5}, "k", row)] == [None]
