"""The pure freshness decision: every rule stated as a property."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshkeep import ConfigurationError, Policy
from freshkeep.core.entry import Entry, Fingerprint, SectionEntry
from freshkeep.core.policy import HIT as HIT_
from freshkeep.core.policy import Hit, Miss, RebuildSections, ServeStale, decide

SOURCES = {"core": ("a", "b"), "tail": ("c",)}


def make_entry(fps: dict[str, Fingerprint]) -> Entry:
    parts = {n: SectionEntry(b"{}", fp, 0.0, 0.0) for n, fp in fps.items()}
    return Entry("v", None, parts, {n: SOURCES[n] for n in fps})


def current_of(revs: dict[str, int]):  # type: ignore[no-untyped-def]
    return lambda sources: tuple(revs.get(s, 0) for s in sources)


def never(sources: Sequence[str], fp: Fingerprint) -> bool:
    return False


def test_no_entry_is_a_miss() -> None:
    assert decide(None, current_of({}), never, age=0, policy=Policy()) == Miss("absent")


def test_refresh_is_a_miss_even_when_current() -> None:
    e = make_entry({"core": (0, 0), "tail": (0,)})
    assert decide(e, current_of({}), never, age=0, policy=Policy(), refresh=True) == Miss("refresh")


def test_one_section_changed_rebuilds_only_it() -> None:
    e = make_entry({"core": (1, 1), "tail": (1,)})
    d = decide(e, current_of({"a": 1, "b": 1, "c": 2}), never, age=0, policy=Policy())
    assert d == RebuildSections(("tail",))


def test_all_sections_changed_is_a_miss() -> None:
    e = make_entry({"core": (1, 1), "tail": (1,)})
    d = decide(e, current_of({"a": 2, "b": 1, "c": 2}), never, age=0, policy=Policy())
    assert d == Miss("changed")


def test_swr_serves_stale_within_max_stale_only() -> None:
    e = make_entry({"core": (1, 1), "tail": (1,)})
    cur = current_of({"a": 2, "b": 1, "c": 1})
    swr = Policy.swr(10)
    assert decide(e, cur, never, age=10, policy=swr) == ServeStale(("core",))
    assert decide(e, cur, never, age=10.001, policy=swr) == RebuildSections(("core",))


def test_local_commit_is_rebuilt_in_line_under_swr() -> None:
    e = make_entry({"core": (1, 1), "tail": (1,)})
    d = decide(
        e, current_of({"a": 2, "b": 1, "c": 1}), lambda s, fp: True, age=0, policy=Policy.swr(60)
    )
    assert d == RebuildSections(("core",))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "lazy"},
        {"max_stale": -1},
        {"stale_if_error": float("nan")},
        {"mode": "swr", "max_stale": 0},
    ],
)
def test_bad_policy_is_a_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Policy(**kwargs)  # type: ignore[arg-type]


revs = st.dictionaries(st.sampled_from("abc"), st.integers(0, 3))
fps = st.fixed_dictionaries(
    {"core": st.tuples(st.integers(0, 3), st.integers(0, 3)), "tail": st.tuples(st.integers(0, 3))}
)
policies = st.one_of(
    st.builds(Policy.strict, stale_if_error=st.floats(0, 100)),
    st.builds(Policy.swr, st.floats(0.001, 100)),
)


@given(fps, revs, st.floats(0, 200), policies, st.booleans())
def test_decision_rules(
    fp: dict[str, Fingerprint], cur: dict[str, int], age: float, policy: Policy, hard: bool
) -> None:
    e = make_entry(fp)
    current = current_of(cur)
    d = decide(e, current, lambda s, f: hard, age=age, policy=policy)
    changed = {n for n, f in fp.items() if f != current(SOURCES[n])}
    if not changed:
        assert isinstance(d, Hit)  # a hit exactly when every section matches
    elif isinstance(d, ServeStale):
        # stale only under swr, within max_stale, never past a local commit
        assert policy.mode == "swr" and age <= policy.max_stale and not hard
        assert set(d.sections) == changed
    elif isinstance(d, RebuildSections):
        assert set(d.sections) == changed and changed != set(fp)
    else:
        assert d == Miss("changed") and changed == set(fp)


# -- max_age and per-section policies ---------------------------------------------------------


def aged_entry(built: dict[str, float]) -> Entry:
    parts = {n: SectionEntry(b"{}", (0,) * len(SOURCES[n]), at, 0.0) for n, at in built.items()}
    return Entry("v", None, parts, {n: SOURCES[n] for n in built})


def test_max_age_is_validated() -> None:
    for bad in (0, -1, float("nan"), "300", True):
        with pytest.raises(ConfigurationError, match="max_age"):
            Policy(max_age=bad)  # type: ignore[arg-type]
    assert Policy.swr(30, max_age=300).max_age == Policy.strict(max_age=300).max_age == 300


def test_an_entry_older_than_max_age_is_rebuilt_whatever_its_revisions() -> None:
    e = aged_entry({"core": 0.0, "tail": 0.0})
    cur = current_of({})
    strict = Policy.strict(max_age=300)
    assert decide(e, cur, never, age=0, policy=strict, now=300.0) == HIT_
    assert decide(e, cur, never, age=0, policy=strict, now=300.5) == Miss("expired")
    assert decide(e, cur, never, age=0, policy=strict) == HIT_  # no clock: no cap
    swr = Policy.swr(30, max_age=300)
    assert decide(e, cur, never, age=0, policy=swr, now=301.0) == ServeStale(
        ("core", "tail"), "expired"
    )
    assert decide(e, cur, never, age=31, policy=swr, now=301.0) == Miss("expired")


def test_only_the_expired_section_is_rebuilt() -> None:
    e = aged_entry({"core": 0.0, "tail": 200.0})
    d = decide(e, current_of({}), never, age=0, policy=Policy.strict(max_age=300), now=400.0)
    assert d == RebuildSections(("core",), (), "expired")


def test_a_strict_section_is_rebuilt_in_line_while_the_rest_is_served_stale() -> None:
    e = make_entry({"core": (1, 1), "tail": (1,)})
    policies = {"tail": Policy.strict()}
    swr = Policy.swr(30)
    both = current_of({"a": 2, "b": 1, "c": 2})
    d = decide(e, both, never, age=5, policy=swr, policies=policies)
    assert d == RebuildSections(("tail",), ("core",))
    core_only = current_of({"a": 2, "b": 1, "c": 1})
    assert decide(e, core_only, never, age=5, policy=swr, policies=policies) == ServeStale(
        ("core",)
    )
    tail_only = current_of({"a": 1, "b": 1, "c": 2})
    assert decide(e, tail_only, never, age=5, policy=swr, policies=policies) == RebuildSections(
        ("tail",)
    )


@given(
    st.dictionaries(st.sampled_from(["core", "tail"]), st.sampled_from(["strict", "swr"])),
    st.booleans(),
    st.booleans(),
    st.floats(0, 100),
)
def test_every_changed_section_is_rebuilt_in_line_or_in_the_background(
    modes: dict[str, str], core_changed: bool, tail_changed: bool, age: float
) -> None:
    e = make_entry({"core": (1, 1), "tail": (1,)})
    cur = current_of({"a": 1 + core_changed, "b": 1, "c": 1 + tail_changed})
    policies = {n: Policy.strict() if m == "strict" else Policy.swr(30) for n, m in modes.items()}
    d = decide(e, cur, never, age=age, policy=Policy.swr(30), policies=policies)
    changed = {n for n, c in (("core", core_changed), ("tail", tail_changed)) if c}
    if not changed:
        assert isinstance(d, Hit)
        return
    if isinstance(d, Miss):
        inline, background = {"core", "tail"}, set()
    elif isinstance(d, RebuildSections):
        inline, background = set(d.sections), set(d.background)
    else:
        assert isinstance(d, ServeStale)
        inline, background = set(), set(d.sections)
    assert inline | background == changed and not inline & background
    for name in inline:  # in line only when its own policy says so, or past max_stale
        assert policies.get(name, Policy.swr(30)).mode == "strict" or age > 30
