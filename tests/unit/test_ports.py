"""The ports' defaults, and the in-process adapters against the conformance suites."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping
from pathlib import Path

import pytest

import freshkeep
from freshkeep.artifacts import FsspecStorage
from freshkeep.buses.local import LocalBus
from freshkeep.core.revision import Revision
from freshkeep.notify import MemoryStateStore
from freshkeep.ports import (
    Bus,
    Listener,
    Lock,
    ObjectStorage,
    ProcessingStateStore,
    RevisionSource,
    SharedStore,
    StateStore,
)
from freshkeep.processing import MemoryProcessingState
from freshkeep.stores.local_lock import LocalLock
from freshkeep.stores.memory_shared import MemorySharedStore
from freshkeep.testing import FakeClock, MemoryRevisions
from freshkeep.testing.conformance import (
    BusSuite,
    LockSuite,
    ObjectStorageSuite,
    Plant,
    ProcessingStateStoreSuite,
    SharedStoreSuite,
    StateStoreSuite,
)


class TestMemorySharedStore(SharedStoreSuite):
    @pytest.fixture
    async def store(self) -> AsyncIterator[SharedStore]:
        yield MemorySharedStore(secret=b"s")

    @pytest.fixture
    def plant(self, store: MemorySharedStore) -> Plant:
        async def plant(key: str, data: bytes) -> None:
            store.data[key] = data

        return plant


class TestUnsignedMemorySharedStore(TestMemorySharedStore):
    @pytest.fixture
    async def store(self) -> AsyncIterator[SharedStore]:
        yield MemorySharedStore()


class TestLocalBus(BusSuite):
    @pytest.fixture
    async def buses(self) -> AsyncIterator[tuple[Bus, Bus]]:
        bus = LocalBus()
        yield bus, bus


class TestLocalLock(LockSuite):
    @pytest.fixture
    async def lock(self) -> AsyncIterator[Lock]:
        yield LocalLock(clock=FakeClock())

    async def pass_time(self, lock: Lock, seconds: float) -> None:
        assert isinstance(lock, LocalLock) and isinstance(lock.clock, FakeClock)
        lock.clock.advance(seconds)


class TestMemoryStateStore(StateStoreSuite):
    @pytest.fixture
    async def state_store(self) -> AsyncIterator[StateStore]:
        yield MemoryStateStore()


class TestMemoryProcessingState(ProcessingStateStoreSuite):
    @pytest.fixture
    async def processing_store(self) -> AsyncIterator[ProcessingStateStore]:
        yield MemoryProcessingState()


class TestLocalObjectStorage(ObjectStorageSuite):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[ObjectStorage]:
        yield FsspecStorage(str(tmp_path / "objects"))


class _MinimalBus(Bus):
    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        self.publish_nowait(revisions, origin=origin)

    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        for listener in self.listeners:
            listener(revisions, origin)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


class _MinimalSource(RevisionSource):
    async def read(self, sources: Collection[str]) -> dict[str, Revision]:
        return dict.fromkeys(sources, 0)


async def test_optional_capabilities_default_to_not_supported() -> None:
    bus = _MinimalBus()
    assert await bus.start() is True
    bus.on_connect(lambda: None)()
    bus.on_disconnect(lambda: None)()
    await bus.aclose()
    assert await _MinimalSource().bump(["table:a"]) is None
    assert MemorySharedStore().lock() is not None


async def test_a_keeper_runs_on_a_minimal_bus_and_refuses_a_bump_it_cannot_make() -> None:
    keeper = freshkeep.Keeper(_MinimalSource(), bus=_MinimalBus())
    await keeper.start()
    with pytest.raises(freshkeep.ConfigurationError, match="cannot bump"):
        await keeper.bump("table:a")
    await keeper.aclose()
    memory = freshkeep.Keeper(MemoryRevisions())
    # A table bumped by hand moves every partition of it too.
    assert await memory.bump("table:a") == {"table:a": 1, "table:a/*": 1}
    await memory.aclose()


def test_a_keeper_refuses_a_backend_that_is_not_a_port() -> None:
    class DuckBus:
        async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
            return None

    with pytest.raises(freshkeep.ConfigurationError, match=r"bus must be a freshkeep.ports.Bus"):
        freshkeep.Keeper(bus=DuckBus())  # type: ignore[arg-type]
    with pytest.raises(freshkeep.ConfigurationError, match="RevisionSource"):
        freshkeep.Keeper(object())  # type: ignore[arg-type]


def test_the_adapters_subclass_their_ports() -> None:
    assert issubclass(LocalBus, Bus) and issubclass(LocalLock, Lock)
    assert issubclass(MemoryRevisions, RevisionSource)
    assert issubclass(FsspecStorage, ObjectStorage)
    assert issubclass(MemoryStateStore, StateStore)
    assert issubclass(MemoryProcessingState, ProcessingStateStore)


def test_importing_freshkeep_testing_needs_no_pytest() -> None:
    import subprocess
    import sys

    code = "import sys, freshkeep.testing; assert 'pytest' not in sys.modules, 'pytest imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ports_sit_just_above_core() -> None:
    """Ports import only core and exceptions; core never imports a port at run time."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "imports.py"
    spec = importlib.util.spec_from_file_location("fk_imports", path)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    graph = tool.package_graph()
    assert graph.get("freshkeep.ports", set()) <= {"freshkeep.core", "freshkeep.exceptions"}
    assert "freshkeep.ports" not in graph.get("freshkeep.core", set())


def test_the_ports_all_is_sorted_and_complete() -> None:
    import types

    from freshkeep import ports
    from freshkeep.testing import conformance

    for module in (ports, conformance):
        public = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, types.ModuleType)
            and name != "annotations"
        }
        assert sorted(module.__all__) == module.__all__
        assert set(module.__all__) == public
