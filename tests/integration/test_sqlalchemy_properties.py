"""Property: whatever mix of committed and rolled-back transactions (savepoints included) runs
through the hooks, each table's counter equals the number of committed transactions that wrote
it, and the keeper's snapshot equals the database's counters.

One outcome may over-invalidate: writes undone by a rolled-back savepoint inside a transaction
that then commits are allowed (not required) to bump their tables; the snapshot must still
equal the database exactly."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from freshkeep import Revision
from tests.integration.sa_support import Project, Tag, Task, TrackedDb, sqlite_db, whole

MODELS: dict[str, type[Project] | type[Task] | type[Tag]] = {
    "projects": Project,
    "tasks": Task,
    "tags": Tag,
}
Outcome = Literal[
    "commit", "rollback", "savepoint-commit", "savepoint-then-rollback", "undone-then-commit"
]
OUTCOMES: list[Outcome] = [
    "commit",
    "rollback",
    "savepoint-commit",
    "savepoint-then-rollback",
    "undone-then-commit",
]
Write = Literal["insert", "update", "delete"]


@dataclass(frozen=True)
class Tx:
    writes: tuple[tuple[str, Write], ...]
    outcome: Outcome


transactions = st.builds(
    Tx,
    writes=st.lists(
        st.tuples(st.sampled_from(sorted(MODELS)), st.sampled_from(["insert", "update", "delete"])),
        min_size=1,
        max_size=4,
        unique_by=lambda w: w[0],
    ).map(tuple),
    outcome=st.sampled_from(OUTCOMES),
)


async def write(s: AsyncSession, table: str, kind: Write, rows: set[int], next_id: int) -> None:
    """One write that changes a row of ``table`` (or inserts one, when there is none)."""
    model = MODELS[table]
    if kind == "insert" or not rows:
        values = {"title": "t"} if model is Task else {"name": "n"}
        s.add(model(id=next_id, **values))
    elif kind == "update":
        column = model.title if model is Task else model.name  # type: ignore[union-attr]
        await s.execute(update(model).where(model.id == min(rows)).values({column: f"v{next_id}"}))
    else:
        await s.execute(delete(model).where(model.id == min(rows)))


async def run(txs: list[Tx], db: TrackedDb) -> tuple[dict[str, int], dict[str, int]]:
    """Run ``txs``; return, per table, how many committed transactions wrote it, and how many
    more may have bumped it (their writes were undone by a savepoint rollback)."""
    exact: dict[str, int] = {}
    extra: dict[str, int] = {}
    rows: dict[str, set[int]] = {t: set() for t in MODELS}
    next_id = 1
    for tx in txs:
        staged = {t: set(r) for t, r in rows.items()}
        async with db.session() as s:
            outer = await s.begin_nested() if tx.outcome == "undone-then-commit" else None
            sp = await s.begin_nested() if tx.outcome != "commit" else None
            for table, kind in tx.writes:
                await write(s, table, kind, staged[table], next_id)
                if kind == "insert" or not staged[table]:
                    staged[table].add(next_id)
                elif kind == "delete":
                    staged[table].discard(min(staged[table]))
                next_id += 1
            if sp is not None:
                await sp.commit()  # released: its writes belong to the enclosing transaction
            if outer is not None:
                await outer.rollback()  # undoes them, inner release included
            if tx.outcome == "rollback" or tx.outcome == "savepoint-then-rollback":
                await s.rollback()
                continue
            await s.commit()
            counts = exact if outer is None else extra
            if outer is None:
                rows = staged
            for table, _ in tx.writes:
                counts[f"table:{table}"] = counts.get(f"table:{table}", 0) + 1
    return exact, extra


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(transactions, min_size=1, max_size=8))
def test_counters_count_committed_transactions(txs: list[Tx]) -> None:
    async def check() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            async with sqlite_db(Path(tmp) / "prop.db") as db:
                exact, extra = await run(txs, db)
                counters = await db.counters()
                for source in exact.keys() | extra.keys() | counters.keys():
                    low = exact.get(source, 0)
                    assert low <= counters.get(source, 0) <= low + extra.get(source, 0), source
                if not extra:
                    assert counters == exact
                snapshot: dict[str, Revision] = dict(whole(db.keeper.tracker.snapshot))
                assert snapshot == counters
                assert dict(whole(db.keeper.tracker.floor)) == counters
                committed = sum(t.outcome in ("commit", "savepoint-commit") for t in txs)
                undone = sum(t.outcome == "undone-then-commit" for t in txs)
                assert committed <= len(db.published) <= committed + undone

    asyncio.run(check())
