"""ChangeNotifier: one notification per confirmed change, terminal skips, retries, hysteresis."""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any

import pytest

from freshkeep import (
    ChangeNotifier,
    ConfigurationError,
    DuplicateNameError,
    EncodeError,
    Keeper,
    MemoryStateStore,
    MissingDependencyError,
    Notice,
    StateStore,
)
from freshkeep.notify import canonical
from freshkeep.testing import FakeClock


class Outbox:
    """A ``send`` that records notices and can fail or block."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self, notice: Notice) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.notices.append(notice)

    @property
    def kinds(self) -> list[tuple[str, Any, str]]:
        return [(n.subject, n.state, n.kind) for n in self.notices]


class FlakyStore(MemoryStateStore):
    """A memory store whose reads or writes can fail."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_get = False
        self.fail_set = False

    async def get(self, notifier: str, subject: str) -> bytes | None:
        if self.fail_get:
            raise OSError("store down")
        return await super().get(notifier, subject)

    async def set(self, notifier: str, subject: str, state: bytes, confirmed_at: float) -> None:
        if self.fail_set:
            raise OSError("store down")
        await super().set(notifier, subject, state, confirmed_at)


def is_done(state: Any) -> bool:
    return isinstance(state, dict) and state.get("status") == "done"


async def test_a_thousand_ticks_of_an_unchanged_subject_send_once() -> None:
    out = Outbox()
    notifier = ChangeNotifier("tasks", out)
    for _ in range(1000):
        await notifier.observe("t1", {"status": "blocked", "by": ["t0"]})
    assert out.kinds == [("t1", {"status": "blocked", "by": ["t0"]}, "new")]
    assert (notifier.stats.sent, notifier.stats.deduped) == (1, 999)
    assert await notifier.observe("t1", {"by": ["t0"], "status": "blocked"}) == "deduped"
    assert await notifier.observe("t1", {"status": "ready", "by": []}) == "sent"
    assert out.notices[-1].kind == "change"
    assert out.notices[-1].previous == {"status": "blocked", "by": ["t0"]}
    for _ in range(1000):
        await notifier.observe("t1", {"status": "ready", "by": []})
    assert notifier.stats.sent == 2 and len(out.notices) == 2


async def test_terminal_states_are_skipped_and_counted() -> None:
    out = Outbox()
    notifier = ChangeNotifier("tasks", out, terminal=is_done)
    for _ in range(100):
        assert await notifier.observe("t9", {"status": "done"}) == "skipped"
    assert out.notices == [] and notifier.stats.skipped == 100
    await notifier.observe("t1", {"status": "open"})
    assert await notifier.observe("t1", {"status": "done"}) == "skipped"
    assert await notifier.confirmed("t1") == {"status": "open"}
    assert len(out.notices) == 1


async def test_a_failed_send_is_retried_on_the_next_tick() -> None:
    out = Outbox()
    notifier = ChangeNotifier("tasks", out)
    out.fail = RuntimeError("smtp down")
    assert await notifier.observe("t1", "unblocked") == "failed"
    assert await notifier.confirmed("t1") is None
    assert notifier.stats.failed == 1 and notifier.stats.last_error == "RuntimeError: smtp down"
    out.fail = None
    assert await notifier.observe("t1", "unblocked") == "sent"
    assert await notifier.observe("t1", "unblocked") == "deduped"
    assert out.kinds == [("t1", "unblocked", "new")]


async def test_a_restart_with_a_persistent_store_does_not_resend() -> None:
    store = MemoryStateStore()  # outlives the notifier, as a database would the process
    out = Outbox()
    first = ChangeNotifier("tasks", out, store=store)
    for i in range(5):
        await first.observe(f"t{i}", {"status": "blocked"})
    assert len(out.notices) == 5
    restarted = ChangeNotifier("tasks", out, store=store)
    assert await restarted.preload() == 5
    for i in range(5):
        assert await restarted.observe(f"t{i}", {"status": "blocked"}) == "deduped"
    assert len(out.notices) == 5
    other = ChangeNotifier("other", out, store=store)  # names are separate namespaces
    assert await other.observe("t0", {"status": "blocked"}) == "sent"


async def test_without_a_persistent_store_a_restart_resends() -> None:
    out = Outbox()
    await ChangeNotifier("tasks", out).observe("t1", "x")
    await ChangeNotifier("tasks", out).observe("t1", "x")
    assert len(out.notices) == 2


async def test_notify_initial_false_records_a_baseline() -> None:
    out = Outbox()
    notifier = ChangeNotifier("tasks", out, notify_initial=False)
    assert await notifier.observe(1, "blocked") == "baseline"
    assert await notifier.observe(1, "blocked") == "deduped"
    assert await notifier.observe(1, "ready") == "sent"
    assert out.kinds == [("1", "ready", "change")] and notifier.stats.baseline == 1


async def test_hysteresis_waits_for_n_observations_and_counts_flaps() -> None:
    out = Outbox()
    notifier = ChangeNotifier(
        "checks", out, confirm=3, problem=lambda s: s == "failing", notify_initial=False
    )
    await notifier.observe("ci", "passing")
    # A flap: failing twice, then passing again: no notification.
    assert [await notifier.observe("ci", s) for s in ("failing", "failing", "passing")] == [
        "pending",
        "pending",
        "deduped",
    ]
    assert out.notices == [] and notifier.stats.flaps == 1
    for _ in range(3):
        outcome = await notifier.observe("ci", "failing")
    assert outcome == "sent" and out.kinds == [("ci", "failing", "change")]
    # Recovery: confirmed after three observations, as a "recovered" notice.
    for _ in range(2):
        assert await notifier.observe("ci", "passing") == "pending"
    assert await notifier.observe("ci", "passing") == "sent"
    assert out.kinds[-1] == ("ci", "passing", "recovered")
    assert (notifier.stats.sent, notifier.stats.recovered) == (2, 1)
    # A change that moves to a third state restarts the count and is a flap.
    await notifier.observe("ci", "failing")
    await notifier.observe("ci", "unknown")
    assert notifier.stats.flaps == 2


async def test_recovered_without_hysteresis() -> None:
    out = Outbox()
    notifier = ChangeNotifier("checks", out, problem=lambda s: s["ok"] is False)
    await notifier.observe("db", {"ok": False})
    await notifier.observe("db", {"ok": True})
    assert [n.kind for n in out.notices] == ["new", "recovered"]


async def test_hysteresis_retries_a_failed_send() -> None:
    out = Outbox()
    notifier = ChangeNotifier("checks", out, confirm=2)
    out.fail = RuntimeError("down")
    assert [await notifier.observe("x", 1) for _ in range(2)] == ["pending", "failed"]
    out.fail = None
    assert await notifier.observe("x", 1) == "sent"


async def test_store_failures_never_raise_and_are_retried() -> None:
    store = FlakyStore()
    out = Outbox()
    notifier = ChangeNotifier("tasks", out, store=store)
    store.fail_get = True
    assert await notifier.observe("t1", "a") == "error"
    assert out.notices == [] and notifier.stats.store_errors == 1
    store.fail_get = False
    store.fail_set = True
    assert await notifier.observe("t1", "a") == "sent"  # sent; not saved
    assert await notifier.observe("t1", "a") == "deduped"  # confirmed in this process
    assert notifier.snapshot().unsaved == 1
    store.fail_set = False
    await notifier.observe("t1", "a")  # saved on the next observation
    assert await store.get("tasks", "t1") == canonical("a")
    assert notifier.snapshot().unsaved == 0 and len(out.notices) == 1


async def test_concurrent_observations_of_one_subject_send_once() -> None:
    out = Outbox()
    out.gate = asyncio.Event()
    notifier = ChangeNotifier("tasks", out)
    tasks = [asyncio.create_task(notifier.observe("t1", "x")) for _ in range(5)]
    await out.entered.wait()
    out.gate.set()
    assert sorted(await asyncio.gather(*tasks)) == ["deduped"] * 4 + ["sent"]
    assert notifier._locks == {}


async def test_a_sync_send_works() -> None:
    seen: list[Notice] = []
    notifier = ChangeNotifier("tasks", seen.append)
    await notifier.observe("t1", [1, 2])
    assert seen[0].state == [1, 2]


async def test_forget_makes_the_next_state_new() -> None:
    out = Outbox()
    store = MemoryStateStore()
    notifier = ChangeNotifier("tasks", out, store=store)
    await notifier.observe("t1", "x")
    await notifier.forget("t1")
    assert store.states == {}
    await notifier.observe("t1", "x")
    assert [n.kind for n in out.notices] == ["new", "new"]


async def test_bad_input() -> None:
    notifier = ChangeNotifier("n", Outbox())
    with pytest.raises(EncodeError):
        await notifier.observe("t1", object())
    with pytest.raises(ConfigurationError):
        await notifier.observe(1.5, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ChangeNotifier("n", Outbox(), confirm=0)
    with pytest.raises(ConfigurationError):
        ChangeNotifier("", Outbox())


def test_canonical_form_ignores_key_order() -> None:
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical(
        {"a": [1, {"c": 3, "d": 2}], "b": 1}
    )
    assert canonical(1) != canonical("1")


async def test_notifiers_show_in_the_keeper_stats() -> None:
    clock = FakeClock()
    keeper = Keeper(clock=clock)
    out = Outbox()
    notifier = keeper.notifier("tasks", out, terminal=is_done)
    await notifier.observe("t1", {"status": "open"})
    await notifier.observe("t1", {"status": "open"})
    await notifier.observe("t2", {"status": "done"})
    stats = keeper.snapshot().notifiers["tasks"]
    assert (stats.sent, stats.deduped, stats.skipped, stats.failed) == (1, 1, 1, 0)
    assert stats.last_sent_at == clock.time() and stats.subjects == 1
    assert keeper.notifiers["tasks"] is notifier
    with pytest.raises(DuplicateNameError):
        ChangeNotifier("tasks", out, keeper=keeper)


def test_memory_store_is_a_state_store() -> None:
    assert isinstance(MemoryStateStore(), StateStore)


def test_the_redis_store_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    monkeypatch.delitem(sys.modules, "freshkeep.notify.redis", raising=False)
    with pytest.raises(MissingDependencyError, match=r"freshkeep\[redis\]"):
        importlib.import_module("freshkeep.notify.redis")
