"""Delta sections over in-memory revisions: when changes are applied, when a section is
rebuilt instead (and why), and the change log's bounds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshkeep import BuildContext, ConfigurationError, Keeper, Policy, Section
from freshkeep.core.changes import Change, ChangeLog, Rebuild
from freshkeep.testing import FakeClock

ROWS = "table:rows"


class Counter:
    """A section whose value is the sum of the rows' ``n``: built from ``rows``, or applied."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}
        self.builds = 0
        self.applied: list[list[Change]] = []
        self.refuse = False

    async def build(self, ctx: BuildContext) -> dict[str, Any]:
        self.builds += 1
        return {"sum": sum(self.rows.values())}

    def apply(self, value: dict[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
        if self.refuse:
            raise Rebuild("no")
        self.applied.append(list(changes))
        for c in changes:
            value["sum"] += (c.after or {}).get("n", 0) - (c.before or {}).get("n", 0)
        return value


class Db:
    """Commits to ``rows`` as the write hooks report them: revisions and changed rows."""

    def __init__(self, keeper: Keeper, counter: Counter) -> None:
        self.keeper, self.counter, self.rev = keeper, counter, 0

    def commit(self, rid: int, n: int | None, *, known: bool = True) -> None:
        old = self.counter.rows.get(rid)
        if n is None:
            self.counter.rows.pop(rid, None)
        else:
            self.counter.rows[rid] = n
        self.rev += 1
        op = "insert" if old is None else "delete" if n is None else "update"
        before = None if old is None else {"id": rid, "n": old}
        after = None if n is None else {"id": rid, "n": n}
        change = Change(ROWS, op, before, after)
        self.keeper.changes.record({ROWS: self.rev}, [change], () if known else (ROWS,))
        self.keeper.committed({ROWS: self.rev})

    def foreign(self, rid: int, n: int) -> None:
        """A commit of another process: its revision arrives without its rows."""
        self.counter.rows[rid] = n
        self.rev += 1
        self.keeper.tracker.apply({ROWS: self.rev})


def setup(policy: Policy | None = None, **kw: Any) -> tuple[Any, Counter, Db]:
    keeper = Keeper(clock=FakeClock(), **kw)
    counter = Counter()
    view = keeper.view(
        "v",
        sections={"s": Section(counter.build, [ROWS], apply=counter.apply)},
        policy=policy,
    )
    return view, counter, Db(keeper, counter)


async def test_known_commits_are_applied_in_order_and_counted() -> None:
    view, counter, db = setup()
    assert (await view.get()).status == "miss"
    db.commit(1, 5)
    db.commit(2, 7)
    db.commit(1, 6)
    read = await view.get()
    assert read.status == "miss" and read.reason == "delta"
    assert read.body == b'{"sum":13}' and counter.builds == 1
    assert [[(c.op, c.row["id"]) for c in b] for b in counter.applied] == [
        [("insert", 1), ("insert", 2), ("update", 1)]
    ]
    assert (await view.get()).status == "hit"
    snap = view.snapshot()
    assert snap.deltas == {"s": 1} and snap.builds == {"s": 1} and snap.delta_fallbacks == {}
    assert snap.to_dict()["deltas"] == {"s": 1}


async def test_gaps_unknown_changes_and_apply_refusing_rebuild() -> None:
    view, counter, db = setup()
    await view.get()
    db.foreign(1, 3)
    db.commit(2, 4)
    assert (await view.get()).body == b'{"sum":7}'
    db.commit(3, 1, known=False)
    assert (await view.get()).body == b'{"sum":8}'
    counter.refuse = True
    db.commit(3, 2)
    assert (await view.get()).body == b'{"sum":9}'
    assert counter.builds == 4 and not counter.applied
    assert view.snapshot().delta_fallbacks == {"gap": 1, "unknown": 1, "apply": 1}


async def test_forced_and_by_hand_rebuilds_are_rebuilds() -> None:
    view, counter, db = setup()
    await view.get()
    db.commit(1, 1)
    assert (await view.get(refresh=True)).reason is None
    db.commit(1, 2)
    view.invalidate(section="s")
    await view.get()
    assert counter.builds == 3 and not counter.applied
    assert view.snapshot().delta_fallbacks == {"refresh": 2}


async def test_stale_while_revalidate_applies_known_changes_in_line() -> None:
    view, counter, db = setup(Policy.swr(max_stale=60))
    await view.get()
    db.commit(1, 4)
    # Another process's view of it: revisions only (no read-your-writes floor here).
    view.keeper.tracker.floor.clear()
    read = await view.get()
    assert read.status == "miss" and read.reason == "delta" and read.body == b'{"sum":4}'
    db.foreign(2, 1)
    assert (await view.get()).status == "stale"  # nothing to apply: served stale
    await view.wait_idle()
    assert counter.builds == 2


async def test_max_age_rebuilds_whatever_the_changes() -> None:
    view, counter, db = setup(Policy.strict(max_age=10))
    await view.get()
    view.keeper.clock.advance(11)
    db.commit(1, 1)
    await view.get()
    assert counter.builds == 2 and view.snapshot().delta_fallbacks == {"expired": 1}


def test_apply_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="apply must be callable"):
        Section(Counter().build, [ROWS], apply=42)  # type: ignore[arg-type]


def test_the_log_forgets_the_oldest_commits() -> None:
    log = ChangeLog(capacity=2)
    log.follow([ROWS])
    for rev in (1, 2, 3):
        log.record({ROWS: rev}, [Change(ROWS, "insert", None, {"id": rev})], ())
    assert len(log) == 2 and log.forgotten == 1
    assert log.between([ROWS], [0], [3]) == (None, "gap")
    changes, _ = log.between([ROWS], [1], [3])
    assert [c.row["id"] for c in changes or ()] == [2, 3]


def test_a_commit_owns_the_revisions_its_triggers_bumped() -> None:
    log = ChangeLog()
    log.follow([ROWS, "table:other"])
    log.record({ROWS: 5, "table:other": 9}, [], (), since={ROWS: 2})
    assert log.between([ROWS], [2], [5]) == ([], None)
    assert log.between(["table:other"], [7], [9]) == (None, "gap")
    assert log.between([ROWS], [1], [5]) == (None, "gap")
    # a value built at one of them (a trigger's message told it) may hold the whole commit
    assert log.between([ROWS], [3], [5]) == (None, "gap")
    assert log.between([ROWS], [5], [5]) == ([], None)


def test_a_commit_of_too_many_rows_is_unknown() -> None:
    log = ChangeLog(max_rows=2)
    log.follow([ROWS])
    log.record({ROWS: 1}, [Change(ROWS, "insert", None, {"id": i}) for i in range(3)], ())
    assert log.between([ROWS], [0], [1]) == (None, "unknown")


def test_unfollowed_sources_are_not_kept() -> None:
    log = ChangeLog()
    log.record({ROWS: 1}, [Change(ROWS, "insert", None, {"id": 1})], ())
    assert len(log) == 0 and log.between([ROWS], [0], [1]) == (None, "gap")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.one_of(st.none(), st.integers(-5, 5)), st.booleans()),
        max_size=30,
    ),
    st.integers(1, 4),
)
async def test_whatever_the_commits_a_read_equals_a_rebuild(
    commits: list[tuple[int, int | None, bool]], every: int
) -> None:
    view, counter, db = setup()
    await view.get()
    for i, (rid, n, known) in enumerate(commits):
        if i % 7 == 6:
            db.foreign(rid, n or 0)
        else:
            db.commit(rid, n, known=known)
        if i % every == 0:
            expected = f'{{"sum":{sum(counter.rows.values())}}}'.encode()
            assert (await view.get()).body == expected
