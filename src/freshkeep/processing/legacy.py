"""Import a per-file processing state table of an earlier service into freshkeep's.

A service that processed files before freshkeep often kept one row per file: its path, what it
looked like when processed, when, and maybe its last error. freshkeep keeps one row per
(processor, item) in ``freshkeep_processing_state``. :func:`import_processing_state` copies the
rows of such a *legacy* table under one processor's name, then drops the legacy table, in one
transaction with the migrations to ``revision`` (``freshkeep migrate
--import-processing-state TABLE --processor NAME``).

The legacy table's columns, matched by name (case-insensitive); only the path is required:

- ``path`` (or ``file``) → ``item``: the item's key. ``\\`` becomes ``/``; ``strip_prefix`` and
  a leading ``./`` are removed. A row without a path is skipped.
- ``mtime_ns`` (or ``mtime``, in seconds: a number or a timestamp) → ``mtime_ns``; absent:
  ``-1``.
- ``size`` → ``size``; absent: ``-1``.
- ``content_hash`` (or ``hash``, ``sha256``) → ``content_hash``: the hex SHA-256 of the
  content, as freshkeep computes it.
- ``processed_at`` (seconds since the epoch, or a timestamp; a naive one is UTC) →
  ``processed_at``. Without the column: the import time for rows without an error.
- ``counts`` (a JSON object of integers) → ``counts``; absent: ``{}``.
- ``last_error`` (or ``error``) → ``last_error``: set, the item failed.
- ``attempts`` → ``attempts``; absent: 1 for a failed row, else 0.
- ``retry_at`` (seconds or a timestamp) → ``retry_at``.

Other columns are ignored. An unknown ``mtime_ns`` or ``size`` (``-1``) never matches a file,
so the next run hashes each file once: one whose content has the recorded ``content_hash`` is
``unchanged`` (not processed again), any other is processed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    from sqlalchemy import (
        Column,
        Connection,
        MetaData,
        Table,
        func,
        inspect,
        make_url,
        select,
    )
    from sqlalchemy import create_engine as sa_create_engine
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.ext.asyncio import create_async_engine
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("sqlalchemy", exc.name or "sqlalchemy") from exc

from freshkeep.sql import migrate
from freshkeep.sql.engine import sqlite_transactions
from freshkeep.sql.schema import PROCESSING_STATE_TABLE, metadata, processing_state_table

KEY_COLUMNS = ("path", "file")
"""The legacy table's column of the file's path (the first one present)."""

COLUMNS: Mapping[str, tuple[str, ...]] = {
    "mtime_ns": ("mtime_ns",),
    "mtime": ("mtime",),
    "size": ("size",),
    "content_hash": ("content_hash", "hash", "sha256"),
    "processed_at": ("processed_at",),
    "counts": ("counts",),
    "last_error": ("last_error", "error"),
    "attempts": ("attempts",),
    "retry_at": ("retry_at",),
}
"""The legacy columns read for each value (the first one present), besides the path."""

BATCH = 500
"""Legacy rows read and written per statement."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StateImport:
    """What :func:`import_processing_state` did."""

    table: str
    """The legacy table."""
    processor: str
    """The processor its rows were imported under."""
    found: bool
    """Whether the legacy table existed (``False``: a fresh install, or imported already)."""
    read: int = 0
    """Legacy rows read."""
    imported: int = 0
    """Rows added to ``freshkeep_processing_state``."""
    kept: int = 0
    """Legacy rows whose item freshkeep had already for the processor (its row is kept), or
    whose path repeats another row's."""
    skipped: int = 0
    """Legacy rows without a path."""
    migration: migrate.MigrationResult | None = None
    """The migrations run in the same transaction."""

    @property
    def dropped(self) -> bool:
        """Whether the legacy table was dropped (it is whenever it was found)."""
        return self.found


def import_processing_state(
    target: migrate.Target,
    table: str,
    *,
    processor: str,
    strip_prefix: str | None = None,
    revision: str = "head",
) -> StateImport:
    """Upgrade freshkeep's tables to ``revision``, copy the rows of the legacy per-file state
    ``table`` (``schema.table`` works) into ``freshkeep_processing_state`` as ``processor``'s,
    and drop ``table``: all in one transaction, so a failure changes nothing.

    Without the legacy table it only migrates (``found`` is ``False``), so running it again is
    harmless. A row freshkeep already has for (``processor``, item) is kept, never replaced.
    ``strip_prefix``: a directory removed from the front of legacy paths (e.g. the processor's
    ``root``, for a table that stored absolute paths). A legacy table whose shape does not fit
    (see the module docstring) raises :class:`~freshkeep.exceptions.ConfigurationError`.

    ``target`` is a URL or a sync engine or connection (:func:`import_processing_state_async`
    takes async ones). A SQLite URL gets real transactions (:func:`~freshkeep.sql.engine.
    sqlite_transactions`), so the migrations' DDL is part of the transaction too.
    """
    work = _work(table, processor, strip_prefix, revision)
    if not isinstance(target, str):
        return migrate.run(target, work)
    url = migrate.normalize_url(target)
    if _is_async(url):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(
                import_processing_state_async(
                    url,
                    table,
                    processor=processor,
                    strip_prefix=strip_prefix,
                    revision=revision,
                )
            )
        raise ConfigurationError(
            "an async database URL inside a running event loop: use import_processing_state_async"
        )
    engine = sa_create_engine(url)
    sqlite_transactions(engine)
    try:
        return migrate.run(engine, work)
    finally:
        engine.dispose()


async def import_processing_state_async(
    target: migrate.Target,
    table: str,
    *,
    processor: str,
    strip_prefix: str | None = None,
    revision: str = "head",
) -> StateImport:
    """:func:`import_processing_state` from async code (every kind of target)."""
    work = _work(table, processor, strip_prefix, revision)
    if not isinstance(target, str):
        return await migrate.run_async(target, work)
    url = migrate.normalize_url(target)
    if not _is_async(url):
        return await asyncio.to_thread(
            import_processing_state,
            url,
            table,
            processor=processor,
            strip_prefix=strip_prefix,
            revision=revision,
        )
    engine = create_async_engine(url)
    sqlite_transactions(engine)
    try:
        return await migrate.run_async(engine, work)
    finally:
        await engine.dispose()


def _is_async(url: str) -> bool:
    try:
        return bool(getattr(make_url(url).get_dialect(), "is_async", False))
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigurationError(f"not a usable database URL: {url!r} ({exc})") from exc


def _work(
    table: str, processor: str, strip_prefix: str | None, revision: str
) -> Callable[[Connection], StateImport]:
    if not isinstance(processor, str) or not processor or len(processor) > 255:
        raise ConfigurationError(f"processor must be a name of 1 to 255 characters: {processor!r}")
    name = table.rpartition(".")[2]
    if not name:
        raise ConfigurationError(f"which legacy table? {table!r} names none")
    if name in metadata.tables or name == migrate.VERSION_TABLE:
        raise ConfigurationError(f"{name!r} is one of freshkeep's own tables, not a legacy one")

    def work(conn: Connection) -> StateImport:
        result = migrate.upgrade(conn, revision)  # in this transaction
        done = import_into(conn, table, processor=processor, strip_prefix=strip_prefix)
        return replace(done, migration=result)

    return work


def import_into(
    conn: Connection,
    table: str,
    *,
    processor: str,
    strip_prefix: str | None = None,
    now: float | None = None,
) -> StateImport:
    """Copy the legacy ``table`` into ``freshkeep_processing_state`` (which must exist) as
    ``processor``'s rows and drop it, on ``conn`` in the caller's transaction; nothing when the
    table does not exist. ``now``: the import time (default: the wall clock)."""
    schema_name, _, name = table.rpartition(".")
    schema = schema_name or None
    found = inspect(conn)
    if not found.has_table(name, schema=schema):
        return StateImport(table, processor, found=False)
    if not found.has_table(PROCESSING_STATE_TABLE):
        raise ConfigurationError(
            f"{PROCESSING_STATE_TABLE} does not exist: migrate to revision 0003 or later first"
        )
    legacy = Table(name, MetaData(), schema=schema, autoload_with=conn)
    columns = {c.name.lower(): c for c in legacy.columns}
    key = next((columns[k] for k in KEY_COLUMNS if k in columns), None)
    if key is None:
        raise ConfigurationError(
            f"legacy table {table!r} has no path column (one of: {', '.join(KEY_COLUMNS)}); "
            f"its columns: {', '.join(c.name for c in legacy.columns)}"
        )
    picked: dict[str, Column[Any]] = {}
    for value, names in COLUMNS.items():
        column = next((columns[n] for n in names if n in columns), None)
        if column is not None:
            picked[value] = column
    convert = _Converter(processor, key, picked, strip_prefix, time.time() if now is None else now)
    t = processing_state_table
    count = select(func.count()).select_from(t).where(t.c.processor == processor)
    before = int(conn.execute(count).scalar_one())
    read = skipped = 0
    rows = conn.execute(select(key, *picked.values()))
    try:
        while batch := rows.fetchmany(BATCH):
            new = []
            for row in batch:
                read += 1
                converted = convert(row)
                if converted is None:
                    skipped += 1
                else:
                    new.append(converted)
            _insert_new(conn, new)
    finally:
        rows.close()
    imported = int(conn.execute(count).scalar_one()) - before
    legacy.drop(conn)
    return StateImport(table, processor, True, read, imported, read - skipped - imported, skipped)


class _Converter:
    """Turns a legacy row into a row of ``freshkeep_processing_state``."""

    def __init__(
        self,
        processor: str,
        key: Column[Any],
        picked: dict[str, Column[Any]],
        strip_prefix: str | None,
        now: float,
    ) -> None:
        self.processor = processor
        self.key = key
        self.picked = picked
        prefix = (strip_prefix or "").replace("\\", "/").rstrip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.now = now

    def __call__(self, row: Any) -> dict[str, Any] | None:
        m = row._mapping
        raw = m[self.key]
        if raw is None or not str(raw).strip():
            return None
        item = str(raw).strip().replace("\\", "/")
        if self.prefix and item.startswith(self.prefix):
            item = item[len(self.prefix) :]
        while item.startswith("./"):
            item = item[2:]
        if not item or len(item) > 1024:
            raise ConfigurationError(f"legacy path {raw!r}: not an item key of 1 to 1024 chars")
        v = {name: m[column] for name, column in self.picked.items()}
        try:
            return self._row(item, v)
        except (TypeError, ValueError, OverflowError, orjson.JSONDecodeError) as exc:
            raise ConfigurationError(f"legacy row {raw!r}: {exc}") from exc

    def _row(self, item: str, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("mtime_ns") is not None:
            mtime_ns = int(v["mtime_ns"])
        elif v.get("mtime") is not None:
            mtime_ns = _nanoseconds(v["mtime"])
        else:
            mtime_ns = -1
        error = None if v.get("last_error") is None else str(v["last_error"])
        if "processed_at" in self.picked:
            processed = v["processed_at"]
            processed_at = None if processed is None else _seconds(processed, "processed_at")
        else:
            processed_at = None if error is not None else self.now
        attempts = v.get("attempts")
        retry = v.get("retry_at")
        digest = v.get("content_hash")
        return {
            "processor": self.processor,
            "item": item,
            "mtime_ns": mtime_ns,
            "size": -1 if v.get("size") is None else int(v["size"]),
            "content_hash": None if digest is None else str(digest).strip() or None,
            "processed_at": processed_at,
            "counts": _counts(v.get("counts")),
            "last_error": error,
            "attempts": int(attempts) if attempts is not None else (1 if error else 0),
            "retry_at": None if retry is None else _seconds(retry, "retry_at"),
        }


def _seconds(value: Any, what: str) -> float:
    """Seconds since the epoch of a number, a timestamp or a text of either."""
    return float(_exact(value, what))


def _nanoseconds(value: Any) -> int:
    """:func:`_seconds` in nanoseconds, without the rounding of a float product."""
    return int(_exact(value, "mtime") * 10**9)


def _exact(value: Any, what: str) -> Decimal:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return Decimal((moment - _EPOCH) // timedelta(microseconds=1)) / 10**6
    if isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            return _exact(Decimal(text.strip()), what)
        except InvalidOperation:
            return _exact(datetime.fromisoformat(text.strip()), what)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{what} is neither seconds nor a timestamp: {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is not finite: {value!r}")
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not exact.is_finite():
        raise ValueError(f"{what} is not finite: {value!r}")
    return exact


def _counts(value: Any) -> str:
    if value is None:
        return "{}"
    data = orjson.loads(value) if isinstance(value, str | bytes) else value
    if not isinstance(data, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in data.values()
    ):
        raise ValueError(f"counts is not a JSON object of integers: {value!r}")
    return orjson.dumps({str(k): n for k, n in data.items()}, option=orjson.OPT_SORT_KEYS).decode()


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose (processor, item) is not in the table yet."""
    if not rows:
        return
    t = processing_state_table
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        stmt = (postgresql if dialect == "postgresql" else sqlite).insert(t)
        stmt = stmt.on_conflict_do_nothing(index_elements=["processor", "item"])
        step = BATCH if dialect == "postgresql" else max(1, 999 // len(t.columns))
        for i in range(0, len(rows), step):
            conn.execute(stmt.values(rows[i : i + step]))
        return
    for row in rows:
        exists = select(t.c.item).where(t.c.processor == row["processor"], t.c.item == row["item"])
        if conn.execute(exists).first() is None:
            conn.execute(t.insert().values(row))


__all__ = [
    "COLUMNS",
    "KEY_COLUMNS",
    "StateImport",
    "import_into",
    "import_processing_state",
    "import_processing_state_async",
]
