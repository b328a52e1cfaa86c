"""The health model and registry: headline rule, failing checks, env overrides, built-in checks
of views, remote values, notifiers, the store, the bus and artifact caches."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import create_async_engine

from freshkeep import Component, ConfigurationError, DuplicateNameError, Keeper, Policy, Snapshot
from freshkeep.artifacts import ArtifactBacklog
from freshkeep.health import (
    CheckResult,
    Health,
    HealthConfig,
    HealthReport,
    Level,
    age_text,
    env_names,
    headline,
)
from freshkeep.testing import FakeClock, MemoryRevisions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keeper(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Keeper:
    for var in env_names():
        monkeypatch.delenv(var, raising=False)
    return Keeper(MemoryRevisions({"t": 1}), clock=clock)


# -- model ---------------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(list(Level))))
def test_headline_rule(levels: list[Level]) -> None:
    status = headline(levels)
    if Level.ERROR in levels:
        assert status == "unhealthy"
    elif Level.WARNING in levels:
        assert status == "degraded"
    else:
        assert status == "ok"  # info never changes the headline
    report = HealthReport.from_checks(
        [CheckResult(f"c{i}", lv) for i, lv in enumerate(levels)], 1.0
    )
    assert report.status == status
    assert report.exit_code == {"ok": 0, "degraded": 1, "unhealthy": 2}[status]
    assert report.http_status == (503 if status == "unhealthy" else 200)
    assert sum(report.counts().values()) == len(levels)


def test_report_is_json_ready_and_reads_back() -> None:
    report = HealthReport.from_checks(
        [
            CheckResult("b", Level.WARNING, "behind", {"lag": 3.5, "items": ["x"]}),
            CheckResult("a", "info", "note"),  # type: ignore[arg-type]  # a string is parsed
        ],
        123.0,
    )
    data = json.loads(json.dumps(report.as_dict()))
    assert data["status"] == "degraded"
    assert [c["name"] for c in data["checks"]] == ["a", "b"]
    assert data["checks"][1] == {
        "name": "b",
        "level": "warning",
        "detail": "behind",
        "data": {"lag": 3.5, "items": ["x"]},
    }
    assert HealthReport.from_dict(data) == report
    assert report.as_dict(detailed=False) == {"status": "degraded", "generated_at": 123.0}
    with pytest.raises(ValueError, match="ok, info, warning, error"):
        CheckResult("c", "bad")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (2.5, "2.5s"), (200, "3m 20s"), (7200, "2h 0m"), (93600, "1d 2h")],
)
def test_age_text(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


# -- registry ------------------------------------------------------------------------------------


async def test_checks_of_every_shape_and_a_raising_one_does_not_break_the_run() -> None:
    health = Health(environ={})

    async def slow_ok() -> CheckResult:
        await asyncio.sleep(0)
        return CheckResult("ignored", Level.OK, "fine", {"n": 1})

    def boom() -> CheckResult:
        raise RuntimeError("database on fire")

    health.add("async", slow_ok)
    health.add("tuple", lambda: ("warning", "a bit behind"))
    health.add("triple", lambda: (Level.INFO, "note", {"k": "v"}))
    health.add("level", lambda: Level.OK)
    health.add("boom", boom)
    health.add("garbage", lambda: 42)  # type: ignore[arg-type, return-value]
    report = await health.run()
    by = {c.name: c for c in report.checks}
    assert by["async"] == CheckResult("async", Level.OK, "fine", {"n": 1})
    assert by["tuple"].level is Level.WARNING and by["tuple"].detail == "a bit behind"
    assert by["triple"].data == {"k": "v"}
    assert by["level"].level is Level.OK
    assert by["boom"].level is Level.ERROR
    assert "RuntimeError: database on fire" in by["boom"].detail
    assert by["garbage"].level is Level.ERROR and "returned int" in by["garbage"].detail
    assert report.status == "unhealthy"
    assert health.last_report is report and health.runs == 1


async def test_a_check_over_its_timeout_is_an_error_and_the_others_answer() -> None:
    health = Health(environ={})
    never = asyncio.Event()

    async def hangs() -> Level:
        await never.wait()
        return Level.OK

    health.add("hangs", hangs, timeout=0.01)
    health.add("fine", lambda: Level.OK)
    report = await health.run()
    assert report.get("hangs") == CheckResult(
        "hangs", Level.ERROR, "check timed out after 0.01s", {"timeout": 0.01}
    )
    assert report.get("fine") is not None and report.get("fine").level is Level.OK  # type: ignore[union-attr]


async def test_the_check_timeout_comes_from_the_environment() -> None:
    health = Health(environ={"FRESHKEEP_HEALTH_CHECK_TIMEOUT": "0.01"})
    never = asyncio.Event()

    async def hangs() -> Level:
        await never.wait()
        return Level.OK

    health.add("hangs", hangs)
    report = await health.run()
    assert report.status == "unhealthy"
    assert "0.01s" in report.checks[0].detail


async def test_concurrent_runs_share_one_run() -> None:
    health = Health(environ={})
    calls = 0
    gate = asyncio.Event()

    async def counted() -> Level:
        nonlocal calls
        calls += 1
        await gate.wait()
        return Level.OK

    health.add("counted", counted)
    runs = [asyncio.create_task(health.run()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    reports = await asyncio.gather(*runs)
    assert calls == 1 and all(r is reports[0] for r in reports)
    await health.run()
    assert calls == 2


def test_add_validates() -> None:
    health = Health(environ={})
    health.add("x", lambda: Level.OK)
    with pytest.raises(DuplicateNameError, match="'x'"):
        health.add("x", lambda: Level.OK)
    with pytest.raises(ConfigurationError, match="non-empty"):
        health.add("", lambda: Level.OK)
    with pytest.raises(ConfigurationError, match="callable"):
        health.add("y", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timeout"):
        health.add("z", lambda: Level.OK, timeout=0)
    health.remove("x")
    assert health.names() == []


# -- configuration -------------------------------------------------------------------------------


def test_env_overrides_are_read_and_validated() -> None:
    cfg = HealthConfig.from_env(
        {
            "FRESHKEEP_HEALTH_STUCK_THRESHOLD": "60",
            "FRESHKEEP_HEALTH_LAG_GRACE": "30s",
            "FRESHKEEP_HEALTH_VIEWS_STALE_SHARE": "0.25",
            "FRESHKEEP_OTHER": "ignored",
        }
    )
    assert cfg.stuck_threshold == 60 and cfg.lag_grace == 30 and cfg.views_stale_share == 0.25
    assert HealthConfig.from_env({}) == HealthConfig()


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("FRESHKEEP_HEALTH_STUCK_TRESHOLD", "60", "unknown health setting"),
        ("FRESHKEEP_HEALTH_STUCK_THRESHOLD", "soon", "must be a number of seconds"),
        ("FRESHKEEP_HEALTH_LAG_GRACE", "-1", ">= 0"),
        ("FRESHKEEP_HEALTH_LAG_GRACE", "inf", ">= 0"),
        ("FRESHKEEP_HEALTH_VIEWS_STALE_SHARE", "1.5", "between 0 and 1"),
        ("FRESHKEEP_HEALTH_CHECK_TIMEOUT", "0", "> 0"),
    ],
)
async def test_a_bad_env_override_is_a_configuration_error_naming_it(
    var: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError, match=re.escape(var)) as err:
        HealthConfig.from_env()
    assert message in str(err.value)
    keeper = Keeper()
    with pytest.raises(ConfigurationError, match=re.escape(var)):
        await keeper.start()  # validated at start-up
    with pytest.raises(ConfigurationError, match=re.escape(var)):
        await keeper.health.run()
    await keeper.aclose()


def test_every_override_is_documented() -> None:
    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    page = (ROOT / "docs" / "health.md").read_text()
    for var in env_names():
        assert f"| `{var}` |" in guide, var
        assert f"`{var}`" in page, var


# -- built-in checks -----------------------------------------------------------------------------


async def test_built_in_checks_follow_the_registries(keeper: Keeper) -> None:
    assert keeper.health.names() == ["bus", "store"]
    report = await keeper.health.run()
    assert report.status == "ok"

    async def build(ctx: Any) -> dict[str, int]:
        return {"a": 1}

    keeper.view("later", build, sources=["t"])
    keeper.remote("tracker", lambda key: [1], ttl=60)
    assert keeper.health.names() == ["bus", "remote:tracker", "store", "view:later"]
    report = await keeper.health.run()
    assert {c.name for c in report.checks} == set(keeper.health.names())
    assert report.status == "ok"


async def test_a_failing_view_serving_error_stale_is_a_warning_naming_it(
    keeper: Keeper, clock: FakeClock
) -> None:
    fail: list[Exception] = []

    async def build(ctx: Any) -> dict[str, int]:
        if fail:
            raise fail[0]
        return {"n": 1}

    view = keeper.view("summary", build, sources=["t"], policy=Policy.strict(stale_if_error=600))
    await view.get()
    report = await keeper.health.run()
    assert report.get("view:summary").level is Level.OK  # type: ignore[union-attr]

    fail.append(RuntimeError("tasks table locked"))
    clock.advance(30)
    await keeper.bump("t")
    read = await view.get()
    assert read.status == "error-stale"
    report = await keeper.health.run()
    check = report.get("view:summary")
    assert check is not None and check.level is Level.WARNING
    assert "'summary'" in check.detail and "tasks table locked" in check.detail
    assert "error-stale on 1 of 1" in check.detail
    assert check.data["error_stale"] == 1 and check.data["age"] == 30
    assert report.status == "degraded"

    # still failing after stale_if_error: an error
    clock.advance(700)
    await keeper.bump("t")
    with pytest.raises(Exception, match="tasks table locked"):
        await view.get()
    report = await keeper.health.run()
    assert report.get("view:summary").level is Level.ERROR  # type: ignore[union-attr]
    assert report.status == "unhealthy"

    # it builds again: ok, and the failure is history
    fail.clear()
    await view.get()
    report = await keeper.health.run()
    check = report.get("view:summary")
    assert check is not None and check.level is Level.OK and check.data["failing_since"] is None


async def test_a_view_mostly_served_stale_is_info(keeper: Keeper, clock: FakeClock) -> None:
    async def build(ctx: Any) -> dict[str, int]:
        return {"n": 1}

    view = keeper.view("feed", build, sources=["t"], policy=Policy.swr(60))
    await view.get()
    await keeper.health.run()  # the window starts here
    revisions = keeper.revisions
    assert isinstance(revisions, MemoryRevisions)
    for _ in range(3):
        await revisions.bump(["t"])  # another process writes
        assert (await view.get()).status == "stale"
        await keeper.wait_idle()
    report = await keeper.health.run()
    check = report.get("view:feed")
    assert check is not None and check.level is Level.INFO and "100% of 3" in check.detail
    assert report.status == "ok"
    report = await keeper.health.run()  # no reads since: back to ok
    assert report.get("view:feed").level is Level.OK  # type: ignore[union-attr]


async def test_a_remote_failing_beyond_its_ttl_is_a_warning(
    keeper: Keeper, clock: FakeClock
) -> None:
    fail: list[Exception] = []

    async def fetch(key: Any) -> list[str]:
        if fail:
            raise fail[0]
        return ["open", "done"]

    remote = keeper.remote("tracker", fetch, ttl=60)
    await remote.get()
    assert (await keeper.health.run()).get("remote:tracker").level is Level.OK  # type: ignore[union-attr]
    fail.append(ConnectionError("tracker.example: 502"))
    clock.advance(65)  # TTL 60 + grace (retry_backoff, 1 s) passed
    assert await remote.get() == ["open", "done"]  # stale on error
    report = await keeper.health.run()
    check = report.get("remote:tracker")
    assert check is not None and check.level is Level.WARNING
    assert "past their TTL" in check.detail and "502" in check.detail
    assert report.status == "degraded"


async def test_a_remote_past_max_stale_is_an_error(keeper: Keeper, clock: FakeClock) -> None:
    calls = 0

    async def fetch(key: Any) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("down")
        return 1

    remote = keeper.remote("rates", fetch, ttl=10, max_stale=30, fallback=0)
    await remote.get()
    clock.advance(40)
    await remote.get()
    report = await keeper.health.run()
    assert report.get("remote:rates").level is Level.ERROR  # type: ignore[union-attr]


async def test_a_failing_notifier_is_a_warning(keeper: Keeper) -> None:
    async def send(notice: Any) -> None:
        raise ConnectionError("smtp refused")

    notifier = keeper.notifier("alerts", send)
    await notifier.observe("build-1", {"state": "failed"})
    report = await keeper.health.run()
    check = report.get("notifier:alerts")
    assert check is not None and check.level is Level.WARNING and "smtp refused" in check.detail


class FakeArtifacts(Component):
    """What the artifacts check reads of an ArtifactCache."""

    kind = "artifacts"

    def __init__(self, name: str, **data: Any) -> None:
        self.name = name
        self.data = {
            "prebuild_backlog": 0,
            "prebuild_jobs_waiting": 0,
            "gc_backlog": 0,
            "oldest_expired_age": None,
            "failing_keys": 0,
            "last_error": None,
            "stale_rows": 0,
            "collectable_rows": 0,
            "collectable_objects": 0,
            "in_flight": 0,
        } | data
        self.gc_interval = 600.0

    async def health_data(self) -> ArtifactBacklog:
        return ArtifactBacklog(**self.data)

    def snapshot(self) -> Snapshot:
        return Snapshot(name=self.name)


def register(keeper: Keeper, cache: Any) -> None:
    keeper.register(cache)


async def test_artifact_caches(keeper: Keeper) -> None:
    packs = FakeArtifacts("packs")
    register(keeper, packs)
    register(keeper, FakeArtifacts("exports", prebuild_backlog=150))
    report = await keeper.health.run()
    assert report.get("artifacts:packs").level is Level.OK  # type: ignore[union-attr]
    check = report.get("artifacts:exports")
    assert (
        check is not None
        and check.level is Level.WARNING
        and "prebuild backlog 150" in check.detail
    )
    packs.data.update(oldest_expired_age=1500.0, failing_keys=2, last_error="OSError: disk")
    check = (await keeper.health.run()).get("artifacts:packs")
    assert check is not None and check.level is Level.WARNING
    assert "2 key(s) failing" in check.detail and "OSError: disk" in check.detail
    assert "waits for GC for 25m 0s" in check.detail  # 2 x gc_interval = 20 min


async def test_artifact_thresholds_from_the_environment(keeper: Keeper) -> None:
    register(keeper, FakeArtifacts("p", gc_backlog=20))
    assert (await keeper.health.run()).status == "ok"
    keeper.health.configure({"FRESHKEEP_HEALTH_ARTIFACTS_GC_BACKLOG": "10"})
    check = (await keeper.health.run()).get("artifacts:p")
    assert (
        check is not None and check.level is Level.WARNING and "GC backlog 20 > 10" in check.detail
    )


async def test_an_artifact_cache_that_raises_is_an_error(keeper: Keeper) -> None:
    class Broken(FakeArtifacts):
        async def health_data(self) -> ArtifactBacklog:
            raise OSError("bucket gone")

    register(keeper, Broken("b"))
    report = await keeper.health.run()
    check = report.get("artifacts:b")
    assert check is not None and check.level is Level.ERROR and "bucket gone" in check.detail
    assert report.get("store") is not None  # the other checks still answered


async def test_report_reuses_a_recent_run_within_max_age(clock: FakeClock) -> None:
    health = Health(clock=clock, environ={})
    calls = 0

    def counted() -> Level:
        nonlocal calls
        calls += 1
        return Level.OK

    health.add("counted", counted)
    first = await health.report(max_age=10)
    assert await health.report(max_age=10) is first and calls == 1
    clock.advance(11)
    assert await health.report(max_age=10) is not first and calls == 2
    await health.report()  # max_age 0: always a new run
    assert calls == 3


async def test_a_job_that_failed_for_good_warns_until_the_window_has_passed(
    tmp_path: Path,
) -> None:
    from freshkeep.jobs import JobContext, SQLJobQueue

    clock = FakeClock()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}")
    queue = SQLJobQueue(engine, clock=clock, create_tables=True, poll_interval=0.01)
    keeper = Keeper(MemoryRevisions(), clock=clock)
    keeper.health.watch_jobs(queue)

    async def broken(ctx: JobContext, args: dict[str, Any]) -> None:
        raise RuntimeError("the export disk is full")

    queue.task("export", broken, retries=0)
    try:
        report = await keeper.health.run()
        jobs = next(c for c in report.checks if c.name == "jobs")
        assert jobs.level == Level.OK and report.status == "ok"

        await queue.enqueue("export")
        await queue.drain()
        report = await keeper.health.run()
        jobs = next(c for c in report.checks if c.name == "jobs")
        assert jobs.level == Level.WARNING and report.status == "degraded"
        assert "export: RuntimeError: the export disk is full" in jobs.detail
        assert jobs.data["failed"] == 1

        clock.advance(3601)  # FRESHKEEP_HEALTH_JOBS_FAILED_WINDOW: 3600 s by default
        jobs = next(c for c in (await keeper.health.run()).checks if c.name == "jobs")
        assert jobs.level == Level.OK, jobs
    finally:
        await queue.aclose()
        await engine.dispose()


async def test_a_shared_store_that_replaced_an_unreadable_value_warns_for_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from freshkeep.core.codec import encode_entry
    from freshkeep.stores.memory_shared import MemorySharedStore
    from freshkeep.testing.conformance._store import make_entry

    for var in env_names():
        monkeypatch.delenv(var, raising=False)
    clock = FakeClock()
    store = MemorySharedStore(secret=b"ours", clock=clock)
    keeper = Keeper(MemoryRevisions(), shared=store, clock=clock)
    check = (await keeper.health.run()).get("store")
    assert check is not None and check.level is Level.OK and check.data["poisoned"] == 0

    forged = make_entry({"table:a": 10**12})
    key = store.key_for(forged.view, forged.key)
    store.data[key] = encode_entry(forged, secret=b"theirs")
    assert await store.put(key, make_entry({"table:a": 1}))
    report = await keeper.health.run()
    check = report.get("store")
    assert check is not None and check.level is Level.WARNING and report.status == "degraded"
    assert "1 value(s) it could not read were replaced" in check.detail
    assert "signature" in check.detail and "STORE_POISONED_WINDOW" in check.detail
    assert check.data["poisoned"] == 1 and check.data["last_poisoned_at"] == clock.time()

    clock.advance(3601)  # FRESHKEEP_HEALTH_STORE_POISONED_WINDOW: 3600 s by default
    check = (await keeper.health.run()).get("store")
    assert check is not None and check.level is Level.OK, check
    assert "1 unreadable value(s) replaced so far" in check.detail

    keeper.health.configure({"FRESHKEEP_HEALTH_STORE_POISONED_WINDOW": "7200"})
    check = (await keeper.health.run()).get("store")
    assert check is not None and check.level is Level.WARNING
    await keeper.aclose()
