"""Every component reports a typed, frozen snapshot; ``Keeper.register`` is the one way in."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from freshkeep import (
    BuildContext,
    ChangeNotifier,
    Component,
    ConfigurationError,
    DuplicateNameError,
    DuplicateViewError,
    Keeper,
    KeeperSnapshot,
    LocalBus,
    Pipeline,
    Snapshot,
    ViewSnapshot,
)
from freshkeep.artifacts import ArtifactSnapshot
from freshkeep.buses import bus_from_url
from freshkeep.core.component import KINDS
from freshkeep.health import Level
from freshkeep.jobs import MemoryJobQueue, SQLJobQueueSnapshot
from freshkeep.notify import NotifierSnapshot
from freshkeep.ports import BusSnapshot, RemoteBusSnapshot
from freshkeep.processing import Item, Outcome, PipelineSnapshot, ProcessContext, Processor
from freshkeep.remote import RemoteSnapshot
from freshkeep.settings import Settings
from freshkeep.stores.redis import RedisStore, RedisStoreSnapshot
from freshkeep.testing import FakeClock, MemoryRevisions
from tests.integration.artifacts_helpers import Builder, make_cache

SRC = Path(__file__).resolve().parents[2] / "src" / "freshkeep"

# The keys of the dicts the components reported before their snapshots were typed: the fields
# of their snapshots (with ``name``), and exactly the keys of ``to_dict()`` (the stats JSON).
VIEW_KEYS = {
    "view",
    "sources",
    "policy",
    "reads",
    "builds",
    "build_seconds",
    "build_errors",
    "background_refreshes",
    "collapsed",
    "shared_hits",
    "shared_waits",
    "last_error",
    "last_error_at",
    "last_build_at",
    "failing_since",
    "in_flight",
    "partitions",
    "replica",
    "deltas",  # delta sections (added since)
    "delta_seconds",
    "delta_fallbacks",
}
REMOTE_KEYS = {
    "remote",
    "ttl",
    "max_stale",
    "swr",
    "reads",
    "fetches",
    "fetch_errors",
    "background_refreshes",
    "collapsed",
    "backfilled",  # items completed from defaults= / fallback_item= (added since)
    "filled",
    "last_error",
    "last_error_at",
    "last_fetch_at",
    "keys",
    "failing",
    "max_age",
    "in_flight",
    "values",
    "now",
}
NOTIFIER_KEYS = {
    "notifier",
    "store",
    "confirm",
    "subjects",
    "observations",
    "sent",
    "recovered",
    "deduped",
    "skipped",
    "pending",
    "failed",
    "flaps",
    "baseline",
    "store_errors",
    "unsaved",
    "last_error",
    "last_error_at",
    "last_sent_at",
}
ARTIFACT_KEYS = {
    "hits",
    "misses",
    "built",
    "skipped",
    "failed",
    "stale_served",
    "unavailable",
    "rewrites",
    "gc_runs",
    "gc_rows",
    "gc_objects",
    "gc_orphans",
    "gc_temp_files",
    "last_gc_at",
    "last_gc_seconds",
    "last_error",
    "last_error_at",
    "storage",
    "ttl",
    "max_stale_on_error",
    "orphan_grace",
    "in_flight",
    "pending",
    "failing_keys",
}
SQL_JOBS_KEYS = {
    "backend",
    "worker",
    "tasks",
    "periodic",
    "enqueued",
    "deduplicated",
    "done",
    "failed",
    "retried",
    "stalled",
    "late_finish",
    "errors",
    "skipped",
    "queued",
    "running",
    "running_here",
    "last_error",
    "last_failed_at",
    "last_failed",
}
REDIS_STORE_KEYS = {
    "hits",
    "misses",
    "stored",
    "rejected",
    "corrupt",
    "unencodable",
    "errors",
    "skipped",
    "outages",
    "last_error",
    "last_error_at",
    "last_corrupt",
    "poisoned",
    "last_poisoned",
    "last_poisoned_at",
    "outage_started_at",
    "reachable",
    "outage_seconds",
    "prefix",
    "signed",
}
REMOTE_BUS_KEYS = {
    "kind",
    "channel",
    "started",
    "connected",
    "connects",
    "reconnects",
    "published",
    "received",
    "errors",
    "malformed",
    "dropped",
    "last_error",
    "last_error_at",
    "last_outage_started_at",
    "last_outage_ended_at",
    "last_delivery_ms",
}
KEEPER_KEYS = {
    "instance",
    "probe",
    "resync_interval",
    "probes",
    "commits",
    "remote_revisions",
    "probe_errors",
    "unattributed_writes",
    "remote_changes",
    "store",
    "shared",
    "bus",
    "bus_down",
    "views",
    "remotes",
    "notifiers",
    "artifacts",
}


def fields_of(snapshot: Snapshot) -> set[str]:
    return {f.name for f in dataclasses.fields(snapshot)}


def assert_typed_and_frozen(snapshot: Snapshot, cls: type[Snapshot], keys: set[str]) -> None:
    """A frozen dataclass of ``cls`` whose fields are ``keys`` and its ``name``, and whose
    plain form has exactly ``keys`` (as before) and encodes as JSON."""
    assert type(snapshot) is cls and dataclasses.is_dataclass(snapshot)
    assert fields_of(snapshot) == keys | {"name"}
    assert set(snapshot.to_dict()) == keys
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.name = "renamed"  # type: ignore[misc]
    orjson.dumps(snapshot.to_dict(), option=orjson.OPT_NON_STR_KEYS)


async def build(ctx: BuildContext) -> dict[str, int]:
    return {"n": 1}


@pytest.fixture
def keeper() -> Keeper:
    return Keeper(MemoryRevisions({"table:t": 1}), clock=FakeClock(), settings=Settings())


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    yield engine
    await engine.dispose()


# -- snapshots ------------------------------------------------------------------------------


async def test_a_views_snapshot(keeper: Keeper) -> None:
    view = keeper.view("summary", build, sources=["table:t"])
    await view.get()
    await view.get()
    snap = view.snapshot()
    assert_typed_and_frozen(snap, ViewSnapshot, VIEW_KEYS)
    assert snap.name == snap.view == "summary" and snap.sources == ("table:t",)
    assert snap.reads == {"miss": 1, "hit": 1} and snap.builds == {"default": 1}
    assert snap.to_dict()["sources"] == ["table:t"]  # plain data: lists, not tuples
    assert set(snap.to_dict()["policy"]) == {"mode", "max_stale", "stale_if_error", "max_age"}


async def test_a_per_principal_views_snapshot(keeper: Keeper) -> None:
    view = keeper.view("mine", build, sources=["table:t"], per_principal=True)
    await view.get(principal="ada")
    assert_typed_and_frozen(view.snapshot(), ViewSnapshot, VIEW_KEYS)


async def test_a_remotes_snapshot(keeper: Keeper) -> None:
    remote = keeper.remote("states", lambda key: ["open"], ttl=60)
    assert await remote.get("p1") == ["open"]
    snap = remote.snapshot()
    assert_typed_and_frozen(snap, RemoteSnapshot, REMOTE_KEYS)
    assert snap.keys == 1 and snap.values["p1"].failures == 0
    assert set(snap.to_dict()["values"]["p1"]) == {
        "age",
        "fetched_at",
        "expired",
        "failures",
        "retry_in",
        "last_error",
        "last_error_at",
    }


async def test_a_notifiers_snapshot(keeper: Keeper) -> None:
    async def send(notice: Any) -> None:
        pass

    notifier = keeper.notifier("alerts", send)
    await notifier.observe("t1", {"status": "open"})
    snap = notifier.snapshot()
    assert_typed_and_frozen(snap, NotifierSnapshot, NOTIFIER_KEYS)
    assert snap.sent == 1 and snap.store == "MemoryStateStore"


async def test_an_artifact_caches_snapshot(
    keeper: Keeper, engine: AsyncEngine, tmp_path: Path
) -> None:
    cache = make_cache(engine, tmp_path, Builder(), keeper=keeper)
    await cache.create_tables()
    await cache.get("k1")
    snap = cache.snapshot()
    assert_typed_and_frozen(snap, ArtifactSnapshot, ARTIFACT_KEYS)
    assert snap.misses == 1 and snap.built == 1
    assert keeper.artifacts == {"exports": cache}


async def test_a_pipelines_snapshot() -> None:
    pipeline = Pipeline(name="files")
    snap = pipeline.snapshot()
    assert_typed_and_frozen(snap, PipelineSnapshot, {"processors", "running", "last_runs"})
    assert snap.processors == () and snap.last_runs == {}


async def test_a_job_queues_snapshot() -> None:
    queue = MemoryJobQueue()
    try:

        async def noop(ctx: Any, args: dict[str, Any]) -> None:
            pass

        queue.task("noop", noop)
        await queue.enqueue("noop")
        snap = queue.snapshot()
        assert_typed_and_frozen(snap, SQLJobQueueSnapshot, SQL_JOBS_KEYS)
        assert snap.name == "jobs" and snap.tasks == ("noop",) and snap.enqueued == 1
    finally:
        await queue.aclose()


async def test_the_buses_and_the_shared_stores_snapshots() -> None:
    local = LocalBus().snapshot()
    assert type(local) is BusSnapshot and local.name == "local"
    assert local.to_dict() == {"kind": "local"}  # as the stats JSON always showed it
    bus = bus_from_url("redis://127.0.0.1:1/0", settings=Settings())
    snap = bus.snapshot()
    assert isinstance(snap, RemoteBusSnapshot)
    assert_typed_and_frozen(snap, RemoteBusSnapshot, REMOTE_BUS_KEYS)
    assert snap.kind == "redis" and snap.started is False
    store = RedisStore("redis://127.0.0.1:1/0")
    try:
        assert_typed_and_frozen(store.snapshot(), RedisStoreSnapshot, REDIS_STORE_KEYS)
        assert store.snapshot().reachable is True
    finally:
        await store.aclose()


async def test_the_keepers_snapshot_holds_its_components(keeper: Keeper) -> None:
    view = keeper.view("summary", build, sources=["table:t"])
    await view.get()
    keeper.remote("states", lambda key: 1, ttl=60)
    keeper.register(Pipeline(name="files"))  # listed by keeper.pipelines, not in the JSON
    snap = keeper.snapshot()
    assert type(snap) is KeeperSnapshot and snap.name == "keeper"
    assert fields_of(snap) == KEEPER_KEYS | {"name"}
    assert isinstance(snap.views["summary"], ViewSnapshot)
    assert isinstance(snap.remotes["states"], RemoteSnapshot)
    plain = snap.to_dict()
    assert set(plain) == KEEPER_KEYS
    assert set(plain["views"]["summary"]) == VIEW_KEYS
    assert set(plain["remotes"]["states"]) == REMOTE_KEYS
    assert set(plain["store"]) == {"entries", "bytes", "evictions", "rejected"}
    assert plain["bus"] == {"kind": "local"} and plain["shared"] is None
    orjson.dumps(plain, option=orjson.OPT_NON_STR_KEYS)


# -- register --------------------------------------------------------------------------------


def test_register_returns_the_component_and_lists_it_by_kind(keeper: Keeper) -> None:
    pipeline = Pipeline(name="files")
    assert keeper.register(pipeline) is pipeline
    assert keeper.pipelines == {"files": pipeline}
    assert keeper.components("pipeline") == {"files": pipeline}
    assert keeper.components("bus") == {"local": keeper.bus}  # the keeper's own bus
    view = keeper.view("v", build, sources=["table:t"])
    assert keeper.components("view") == {"v": view} == keeper.views


async def test_register_rejects_a_duplicate_name_of_the_same_kind(keeper: Keeper) -> None:
    keeper.register(Pipeline(name="files"))
    with pytest.raises(DuplicateNameError, match="a pipeline named 'files'"):
        keeper.register(Pipeline(name="files"))
    keeper.view("v", build, sources=["table:t"])
    with pytest.raises(DuplicateViewError):  # a DuplicateNameError too
        keeper.view("v", build, sources=["table:t"])

    async def send(notice: Any) -> None:
        pass

    keeper.notifier("files", send)  # another kind: its own names
    with pytest.raises(DuplicateNameError):
        ChangeNotifier("files", send, keeper=keeper)
    queue = MemoryJobQueue()
    try:
        keeper.register(queue)
        with pytest.raises(DuplicateNameError):
            keeper.register(queue)
    finally:
        await queue.aclose()


def test_register_rejects_an_unknown_kind_and_what_is_not_a_component(keeper: Keeper) -> None:
    class Gadget(Component):
        kind: ClassVar[Any] = "gadget"
        name = "g"

        def snapshot(self) -> Snapshot:
            return Snapshot(name=self.name)

    with pytest.raises(ConfigurationError, match="unknown component kind 'gadget'"):
        keeper.register(Gadget())
    with pytest.raises(ConfigurationError, match="not a freshkeep Component"):
        keeper.register(object())  # type: ignore[type-var]
    with pytest.raises(ConfigurationError, match="unknown component kind"):
        keeper.components("gadget")  # type: ignore[call-overload]
    nameless = Pipeline(name="")
    with pytest.raises(ConfigurationError, match="non-empty string"):
        keeper.register(nameless)
    assert set(KINDS) == {
        "view",
        "remote",
        "notifier",
        "artifacts",
        "pipeline",
        "jobs",
        "bus",
        "store",
    }


def test_a_view_of_another_keeper_is_refused(keeper: Keeper) -> None:
    other = Keeper(clock=FakeClock(), settings=Settings())
    view = other.view("v", build, sources=["table:t"])
    with pytest.raises(ConfigurationError, match="another keeper"):
        keeper.register(view)


class Files(Processor):
    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root, self.pattern = name, root, "*.txt"

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        return Outcome({})


async def test_watching_registers_job_queues_and_pipelines(keeper: Keeper, tmp_path: Path) -> None:
    queue = MemoryJobQueue()
    try:
        keeper.health.watch_jobs(queue)
        assert keeper.jobs == {"jobs": queue}
        assert keeper.health.names() == ["bus", "jobs", "store"]  # no jobs:jobs besides
        keeper.health.remove("jobs")  # unwatched, it is still registered: a built-in check
        assert keeper.health.names() == ["bus", "jobs:jobs", "store"]
        check = (await keeper.health.run()).get("jobs:jobs")
        assert check is not None and check.level is Level.OK and check.data["backend"] == "sql"
    finally:
        await queue.aclose()

    pipeline = Pipeline(name="files")
    pipeline.register(Files("a", tmp_path))
    pipeline.register(Files("b", tmp_path))
    keeper.health.watch_processor(pipeline, "a", cadence=60)
    keeper.health.watch_processor(pipeline, "b", cadence=60)  # registered once
    assert keeper.pipelines == {"files": pipeline}
    other = Pipeline(name="files")
    other.register(Files("c", tmp_path))
    with pytest.raises(DuplicateNameError, match="a pipeline named 'files'"):
        keeper.health.watch_processor(other, "c", cadence=60)
    assert "processor:c" not in keeper.health.names()  # nothing half-added


# -- the package graph -----------------------------------------------------------------------


def test_the_keeper_does_not_import_health() -> None:
    runtime: list[str] = []
    for name in ("keeper.py", "_keeper_components.py", "_keeper_types.py"):
        tree = ast.parse((SRC / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                runtime.append(node.module)
            elif isinstance(node, ast.Import):
                runtime.extend(a.name for a in node.names)
    assert not [m for m in runtime if m.startswith("freshkeep.health")]
    health = "\n".join(p.read_text() for p in (SRC / "health").glob("*.py"))
    assert "from freshkeep.keeper import" not in health.replace(
        "    from freshkeep.keeper import", ""
    )  # only under TYPE_CHECKING (indented)


def test_no_consumer_probes_components_with_getattr() -> None:
    for path in (
        SRC / "health" / "_builtin.py",
        SRC / "health" / "_registry.py",
        SRC / "integrations" / "prometheus.py",
        SRC / "integrations" / "_prometheus_families.py",
        SRC / "integrations" / "dashboard.py",
        SRC / "integrations" / "dashboard_sources.py",
        SRC / "keeper.py",
        SRC / "_keeper_components.py",
    ):
        text = path.read_text()
        for needle in ('getattr(self.bus, "status"', "snapshot_stats", 'getattr(keeper, "'):
            assert needle not in text, (path.name, needle)
