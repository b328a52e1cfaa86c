"""Dropping one section of an entry by hand, and the words a status header says."""

from __future__ import annotations

from typing import Any

import pytest

from freshkeep import BuildContext, ConfigurationError, Keeper, LocalBus, Policy, Section
from freshkeep.settings import Settings
from freshkeep.testing import MemoryRevisions


def _view(keeper: Keeper, builds: dict[str, int], policy: Policy | None = None) -> Any:
    def section(name: str) -> Any:
        async def build(ctx: BuildContext) -> dict[str, int]:
            builds[name] = builds.get(name, 0) + 1
            return {name: builds[name]}

        return build

    return keeper.view(
        "summary",
        sections={
            "core": Section(section("core"), ["table:a"]),
            "progress": Section(section("progress"), ["table:b"]),
        },
        policy=policy,
    )


@pytest.mark.parametrize("policy", [Policy.strict(), Policy.swr(30)])
async def test_invalidating_a_section_rebuilds_it_alone_in_line(policy: Policy) -> None:
    keeper = Keeper(MemoryRevisions(), bus=LocalBus(), sources=["table:a", "table:b"])
    builds: dict[str, int] = {}
    view = _view(keeper, builds, policy)
    await keeper.start()
    assert (await view.get()).status == "miss"
    assert (await view.get()).status == "hit"
    assert view.invalidate(section="progress") is True
    read = await view.get()
    assert read.status == "section"  # in line, even under swr: it was dropped, not changed
    assert read.value == {"core": 1, "progress": 2}
    assert (await view.get()).status == "hit"
    assert view.invalidate() is True  # the whole entry
    assert (await view.get()).status == "miss"
    assert builds == {"core": 2, "progress": 3}
    await keeper.aclose()


async def test_invalidating_an_unknown_section_or_key() -> None:
    keeper = Keeper(MemoryRevisions(), bus=LocalBus(), sources=["table:a", "table:b"])
    view = _view(keeper, {})
    with pytest.raises(ConfigurationError, match=r"no section 'progres'.*core, progress"):
        view.invalidate(section="progres")
    assert view.invalidate(7, section="core") is False  # nothing stored for key 7
    await keeper.aclose()


def test_status_labels_are_checked_and_merged_with_the_setting() -> None:
    settings = Settings(status_labels={"hit": "hit-revision", "stale": "stale"})
    keeper = Keeper(MemoryRevisions(), settings=settings, sources=["table:a"])

    async def build(ctx: BuildContext) -> int:
        return 1

    view = keeper.view("v", build, sources=["table:a"], labels={"section": "progress-section"})
    assert view.labels == {"hit": "hit-revision", "stale": "stale", "section": "progress-section"}
    with pytest.raises(ConfigurationError, match="'fresh' is not a read status"):
        keeper.view("w", build, sources=["table:a"], labels={"fresh": "x"})
    with pytest.raises(ConfigurationError, match="HTTP token"):
        keeper.view("x", build, sources=["table:a"], labels={"hit": "a hit"})
