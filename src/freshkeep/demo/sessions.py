"""The hub's session files: uploads, two processors, their schedule, and the admin endpoint.

- ``POST /sessions/{user}?name=NAME.jsonl``: store a ``.jsonl`` body under
  ``<sessions_root>/<user>/NAME.jsonl``; every line is validated (a malformed line is reported
  with its number, and the file is still stored). A user or file name that is not a plain name
  (path traversal, separators) is refused with 400 and nothing is written.
- Processors ``evidence`` (lines matching a verification rule) and ``usage`` (token and tool
  counts per user), each run by the scheduler at its interval: its own in
  ``processor_intervals``, else ``processing_interval`` seconds.
- ``GET /sessions/usage``: token and tool counts per user, from the processing state.
- ``GET /admin/processors``, ``GET /admin/processors/history`` and ``POST
  /admin/processors/{name}/run`` (``Authorization: Bearer $FRESHKEEP_ADMIN_TOKEN``): the
  library's :func:`freshkeep.processing.http.processor_routes` (list, the record of runs
  started by hand, run now; 404 for an unknown name, 409 while it runs), mounted by the hub's
  app. Those runs are recorded in ``freshkeep_processing_runs`` for
  ``processing_history_keep`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from sqlalchemy.ext.asyncio import AsyncEngine

from freshkeep.demo.schemas import responses
from freshkeep.demo.settings import HubSettings
from freshkeep.integrations.guards import RequestTooLarge
from freshkeep.processing import (
    Item,
    LocalLocks,
    Locks,
    Outcome,
    Pipeline,
    PostgresLocks,
    ProcessContext,
    Processor,
    ProcessorIntervals,
    schedule_processors,
)
from freshkeep.processing.sql import SQLProcessingState, SQLRunHistory
from freshkeep.scheduler import Scheduler

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PLAIN_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
"""A plain name as a JSON-schema pattern (no lookaround): what :func:`plain_name` accepts."""
JSONL_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.jsonl$"
"""A plain name ending in ``.jsonl``."""
MAX_UPLOAD = 64 * 1024 * 1024
"""Bytes a session upload may have (default of the ``max_upload_bytes`` setting)."""

EVIDENCE_RULE = re.compile(
    r"\b(\d+ passed|all tests passed|tests? passed|all checks passed|exit code 0)\b", re.I
)
"""What counts as verification evidence in a session line."""


def plain_name(value: str, what: str, *, suffix: str = "") -> str:
    """``value`` if it is a plain file name (no separators, no ``..``), else 400."""
    ok = _PLAIN.fullmatch(value) is not None and ".." not in value and value.endswith(suffix)
    if not ok:
        raise HTTPException(400, detail=f"invalid {what}: {value!r}")
    return value


def parse_jsonl(data: bytes) -> tuple[list[Any], list[dict[str, Any]]]:
    """The JSON value of each non-empty line, and the errors: ``{"line": n, "error": ...}``
    (1-based line numbers; a malformed line's value is ``None``)."""
    values: list[Any] = []
    errors: list[dict[str, Any]] = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            errors.append({"line": n, "error": str(exc)})
            values.append(None)
            continue
        if not isinstance(value, dict):
            errors.append({"line": n, "error": "not a JSON object"})
            values.append(None)
            continue
        values.append(value)
    return values, errors


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


async def _read(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


class EvidenceProcessor(Processor):
    """Records the lines of each session that match :data:`EVIDENCE_RULE`."""

    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "evidence", root, "*/*.jsonl"
        self.found: dict[str, list[dict[str, Any]]] = {}

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        """Find the matching lines of ``item``."""
        values, errors = parse_jsonl(await _read(item.path))
        hits: list[dict[str, Any]] = []
        for n, value in enumerate(values, 1):
            for text in _strings(value):
                if m := EVIDENCE_RULE.search(text):
                    hits.append({"entry": n, "match": m.group(0)})
                    break
        self.found[item.key] = hits
        counts = {"entries": len(values), "evidence": len(hits), "malformed": len(errors)}
        return Outcome(counts, {"evidence": hits})


class UsageProcessor(Processor):
    """Counts tokens and tool calls per session (summed per user by :meth:`Sessions.usage`)."""

    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "usage", root, "*/*.jsonl"

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        """Sum ``usage.input_tokens``/``output_tokens`` and count ``tool_use`` entries."""
        values, _ = parse_jsonl(await _read(item.path))
        counts: Counter[str] = Counter()
        for value in values:
            if value is None:
                continue
            message = value.get("message") if isinstance(value.get("message"), dict) else {}
            usage = value.get("usage") or message.get("usage") or {}
            if isinstance(usage, dict):
                for k in ("input_tokens", "output_tokens"):
                    if isinstance(usage.get(k), int):
                        counts[k] += usage[k]
            content = message.get("content")
            listed: list[Any] = content if isinstance(content, list) else []
            parts = [value, *[c for c in listed if isinstance(c, dict)]]
            counts["tool_calls"] += sum(1 for p in parts if p.get("type") == "tool_use")
        counts["entries"] = len(values)
        return Outcome(dict(counts))


@dataclass(eq=False)
class Sessions:
    """The session files of the hub: where they are, their processors and their schedule."""

    root: Path
    pipeline: Pipeline
    scheduler: Scheduler
    state: SQLProcessingState
    admin_token: str | None
    intervals: ProcessorIntervals
    max_upload: int = MAX_UPLOAD
    evidence: EvidenceProcessor = field(init=False)
    usage_processor: UsageProcessor = field(init=False)

    def __post_init__(self) -> None:
        self.evidence = cast(
            EvidenceProcessor, self.pipeline.register(EvidenceProcessor(self.root))
        )
        self.usage_processor = cast(
            UsageProcessor, self.pipeline.register(UsageProcessor(self.root))
        )

    @classmethod
    def create(
        cls,
        engine: AsyncEngine,
        settings: HubSettings,
        *,
        intervals: ProcessorIntervals | None = None,
        **pipeline_kw: Any,
    ) -> Sessions:
        """The sessions of a hub on ``engine`` (PostgreSQL: locks across instances).

        ``intervals``: how often each processor runs (default: the ``processing_interval``
        and ``processor_intervals`` settings). An interval set for a processor the hub does
        not have raises :class:`~freshkeep.exceptions.ConfigurationError`."""
        locks: Locks = (
            PostgresLocks(engine) if engine.dialect.name == "postgresql" else LocalLocks()
        )
        state = SQLProcessingState(engine)
        pipeline_kw.setdefault("retry_backoff", settings.processing_retry_backoff)
        pipeline_kw.setdefault("max_retry_backoff", settings.processing_max_retry_backoff)
        pipeline = Pipeline(state, locks=locks, **pipeline_kw)
        if pipeline.history is None:  # who ran a processor by hand, and how it went
            keep = settings.processing_history_keep
            pipeline.history = SQLRunHistory(engine, keep=keep, clock=pipeline.clock)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        root = Path(settings.sessions_root or _default_root(engine)).expanduser().absolute()
        if intervals is None:
            intervals = ProcessorIntervals(
                settings.processing_interval, settings.processor_intervals
            )
        scheduler = Scheduler(clock=pipeline.clock)
        sessions = cls(
            root, pipeline, scheduler, state, token, intervals, settings.max_upload_bytes
        )
        intervals.check(pipeline.names())
        return sessions

    @property
    def scheduled(self) -> dict[str, float]:
        """The interval of each processor the hub schedules (those with an interval > 0)."""
        return self.intervals.scheduled(self.pipeline.names())

    async def start(self) -> None:
        """Create the state table and the root; schedule the processors."""
        await self.state.create_table()
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        new = [n for n in self.pipeline.names() if n not in self.scheduler.jobs]
        schedule_processors(self.scheduler, self.pipeline, self.intervals, names=new)
        if self.scheduler.jobs:
            await self.scheduler.start()

    async def stop(self) -> None:
        """Stop the schedule; cancel runs in flight."""
        await self.scheduler.stop()

    async def store(self, user: str, name: str, data: bytes) -> Path:
        """Write ``data`` to ``<root>/<user>/<name>`` atomically (names already checked)."""
        directory = self.root / user
        return await asyncio.to_thread(_write_atomic, directory, name, data)

    async def usage(self) -> dict[str, dict[str, int]]:
        """Token and tool counts per user, summed from the ``usage`` processor's state."""
        per_user: dict[str, Counter[str]] = {}
        for key, state in (await self.state.load("usage")).items():
            per_user.setdefault(key.split("/", 1)[0], Counter()).update(state.counts)
        return {user: dict(c) for user, c in sorted(per_user.items())}


def _default_root(engine: AsyncEngine) -> str:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:"):
            return str(Path(database).with_suffix("")) + "-sessions"
    return "freshkeep-sessions"


def _write_atomic(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        target = directory / name
        os.replace(tmp, target)
        return target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_sessions(request: Request) -> Sessions:
    """The sessions of the application serving ``request``."""
    return cast(Sessions, request.app.state.sessions)


async def _sessions(request: Request) -> Sessions:
    return get_sessions(request)  # async: a sync dependency runs in a worker thread


SessionsDep = Annotated[Sessions, Depends(_sessions)]

router = APIRouter()


@router.post(
    "/sessions/{user}",
    tags=["sessions"],
    status_code=201,
    responses=responses(
        e400="a user or file name that is not a plain name (nothing is written)",
        e413="the file is larger than max_upload_bytes (nothing is written)",
    ),
    openapi_extra={
        "requestBody": {
            "description": "the transcript: one JSON object per line (any content type)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_session(
    user: Annotated[
        str,
        PathParam(
            description="a plain name: letters, digits, '_', '-', '.', no '..'",
            json_schema_extra={"pattern": PLAIN_PATTERN, "maxLength": 128},
        ),
    ],
    request: Request,
    sessions: SessionsDep,
    name: Annotated[
        str | None,
        Query(
            description="File name: a plain name ending in .jsonl (default: a new one)",
            json_schema_extra={"pattern": JSONL_PATTERN, "maxLength": 128},
        ),
    ] = None,
) -> dict[str, Any]:
    """Store a session transcript (``.jsonl`` body); report malformed lines by number."""
    plain_name(user, "user name")
    file_name = plain_name(name, "file name", suffix=".jsonl") if name is not None else None
    data = await request.body()
    if len(data) > sessions.max_upload:  # the app's BodyLimit answers before, at that limit
        raise RequestTooLarge(sessions.max_upload)
    values, errors = await asyncio.to_thread(parse_jsonl, data)
    file_name = file_name or f"session-{uuid.uuid4().hex}.jsonl"
    await sessions.store(user, file_name, data)
    return {
        "user": user,
        "name": file_name,
        "entries": len(values),
        "malformed": len(errors),
        "errors": errors[:100],
    }


@router.get("/sessions/usage", tags=["sessions"])
async def session_usage(sessions: SessionsDep) -> dict[str, dict[str, int]]:
    """Input/output tokens and tool calls per user, as of the last ``usage`` run."""
    return await sessions.usage()
