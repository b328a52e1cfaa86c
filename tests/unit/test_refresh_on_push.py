"""``refresh_on_push``: revisions pushed by another process rebuild the sections they move at
once, so the next read finds them built (or joins their build) instead of building them."""

from __future__ import annotations

import asyncio
from typing import Any

from freshkeep import BuildContext, Keeper, Policy, Section
from freshkeep.buses.local import LocalBus
from freshkeep.settings import Settings
from freshkeep.testing import MemoryRevisions


class Rows:
    def __init__(self) -> None:
        self.rows = {"t:a": 0, "t:b": 0}
        self.calls = {"t:a": 0, "t:b": 0}
        self.gate: asyncio.Event | None = None

    def builder(self, source: str) -> Any:
        async def build(ctx: BuildContext) -> dict[str, int]:
            self.calls[source] += 1
            if self.gate is not None:
                await self.gate.wait()
            return {source: self.rows[source]}

        return build


def pair(*, on: bool) -> tuple[Keeper, Keeper, Any, Rows]:
    """A writer and a reader keeper on one database and one bus; the reader's view."""
    revs, bus = MemoryRevisions(), LocalBus()
    writer = Keeper(revs, bus=bus, probe="interval")
    reader = Keeper(revs, bus=bus, probe="interval", settings=Settings(refresh_on_push=on))
    rows = Rows()
    view = reader.view(
        "summary",
        sections={s: Section(rows.builder(s), [s]) for s in rows.rows},
        policy=Policy.strict(),
    )
    return writer, reader, view, rows


async def test_a_pushed_change_is_rebuilt_before_the_next_read() -> None:
    writer, reader, view, rows = pair(on=True)
    await view.get()
    rows.rows["t:a"] = 1
    await writer.bump("t:a")  # another process commits; the bus tells the reader
    await reader.wait_idle()
    assert rows.calls == {"t:a": 2, "t:b": 1}  # only the moved section, before any read
    read = await view.read()
    assert read.status == "hit" and read.value == {"t:a": 1, "t:b": 0}
    assert view.snapshot().background_refreshes == 1


async def test_a_read_during_the_pushed_rebuild_joins_it() -> None:
    writer, _, view, rows = pair(on=True)
    await view.get()
    rows.gate = asyncio.Event()
    rows.rows["t:b"] = 7
    await writer.bump("t:b")
    reading = asyncio.create_task(view.get())
    await asyncio.sleep(0)
    assert not reading.done()  # a strict section: never served stale
    rows.gate.set()
    read = await reading
    assert read.status == "section" and read.collapsed and read.value == {"t:a": 0, "t:b": 7}
    assert rows.calls == {"t:a": 1, "t:b": 2}


async def test_off_by_default_and_own_commits_wait_for_a_read() -> None:
    writer, reader, view, rows = pair(on=False)
    await view.get()
    await writer.bump("t:a")
    await reader.wait_idle()
    assert rows.calls == {"t:a": 1, "t:b": 1}
    assert (await view.get()).status == "section"

    writer, reader, view, rows = pair(on=True)
    await view.get()
    await reader.bump("t:a")  # its own commit: read-your-writes rebuilds it in line
    await reader.wait_idle()
    assert rows.calls == {"t:a": 1, "t:b": 1}


async def test_nothing_is_built_for_entries_never_read_or_keyed() -> None:
    writer, reader, view, rows = pair(on=True)
    calls: list[object] = []

    async def keyed(ctx: BuildContext) -> dict[str, object]:
        calls.append(ctx.key)
        return {"key": ctx.key}

    other = reader.view("keyed", sections={"s": Section(keyed, lambda key: ["t:a"])})
    await other.get("k")
    await writer.bump("t:a", "t:b")
    await reader.wait_idle()
    assert rows.calls == {"t:a": 0, "t:b": 0} and calls == ["k"]
    assert view.peek() is None
