"""The layers of DESIGN.md, kept by a test.

Import direction is down only: core → ports → adapters → sql → shapes → integrations → the
CLI, the demo and the benchmark. The graph is read from the source by ``tools/imports.py``
(``python3 tools/imports.py`` prints it), imports under ``if TYPE_CHECKING:`` left out.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "freshkeep_imports_tool", ROOT / "tools/imports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()
MODULES: dict[str, set[str]] = tool.module_graph()
PACKAGES: dict[str, set[str]] = tool.package_graph()

LAYERS: dict[str, int] = {
    "freshkeep.exceptions": 0,
    "freshkeep.core": 0,
    "freshkeep.settings": 1,
    "freshkeep.ports": 1,
    "freshkeep.stores": 2,
    "freshkeep.buses": 2,
    "freshkeep.sql": 3,
    "freshkeep.migrations": 3,
    "freshkeep.views": 4,
    "freshkeep._view_types": 4,  # the value types of freshkeep.views
    "freshkeep._view_builds": 4,  # the build path of freshkeep.views
    "freshkeep._view_replica": 4,  # builds of freshkeep.views on a read replica
    "freshkeep._view_refresh": 4,  # refreshes of freshkeep.views outside a plain read
    "freshkeep.cached": 4,  # cached async functions, views built by calling them
    "freshkeep.remote": 4,
    "freshkeep.artifacts": 4,
    "freshkeep.processing": 4,
    "freshkeep.scheduler": 4,
    "freshkeep.notify": 4,
    "freshkeep.health": 4,
    "freshkeep.jobs": 4,
    "freshkeep.keeper": 4,
    "freshkeep._keeper_types": 4,  # the counters and snapshot of freshkeep.keeper
    "freshkeep._keeper_components": 4,  # the component registry of freshkeep.keeper
    "freshkeep": 5,  # the package's re-exports
    "freshkeep.testing": 6,
    "freshkeep.integrations": 6,
    "freshkeep.cli": 7,
    "freshkeep.demo": 7,
    "freshkeep.bench": 7,
}
"""A package may import packages of its own layer or below. Shapes (layer 4) may import one
another as long as no cycle forms."""

SHAPES = {p for p, layer in LAYERS.items() if layer == 4}


def test_every_package_has_a_layer() -> None:
    assert set(PACKAGES) <= set(LAYERS), sorted(set(PACKAGES) - set(LAYERS))


def test_core_imports_nothing_of_freshkeep_but_the_exceptions() -> None:
    bad = {
        (mod, dep)
        for mod, deps in MODULES.items()
        if mod.startswith("freshkeep.core")
        for dep in deps
        if not (dep.startswith("freshkeep.core") or dep == "freshkeep.exceptions")
    }
    assert not bad, sorted(bad)


def test_imports_go_down_only() -> None:
    bad = sorted(
        (pkg, dep)
        for pkg, deps in PACKAGES.items()
        for dep in deps
        if LAYERS.get(dep, 99) > LAYERS.get(pkg, -1)
    )
    assert not bad, bad


def test_no_shape_imports_an_integration_or_the_demo() -> None:
    bad = sorted(
        (pkg, dep)
        for pkg in SHAPES
        for dep in PACKAGES.get(pkg, ())
        if dep in ("freshkeep.integrations", "freshkeep.demo", "freshkeep.bench", "freshkeep.cli")
    )
    assert not bad, bad


def test_only_the_demo_the_benchmark_and_the_cli_import_the_demo() -> None:
    allowed = {"freshkeep.demo", "freshkeep.bench", "freshkeep.cli"}
    bad = sorted(
        pkg for pkg, deps in PACKAGES.items() if "freshkeep.demo" in deps and pkg not in allowed
    )
    assert not bad, bad


def test_no_package_import_cycle() -> None:
    assert tool.cycles(PACKAGES) == []


def test_the_tool_sees_a_cycle() -> None:
    """The cycle check is not blind."""
    assert tool.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


LIMIT = 600


def test_no_module_over_the_limit() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in (ROOT / "src" / "freshkeep").rglob("*.py")
    }
    over = {path: n for path, n in sizes.items() if n > LIMIT}
    assert not over, over
