"""A load of writers and readers against several hubs, and the check of every read against
the committed history of writes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from freshkeep.core.entry import parse_revision
from tests.distributed.cluster import Hub, Write, percentile, post_progress

RECENT = 20
"""Events in the summary's ``recent_progress``."""


@dataclass(frozen=True)
class Seen:
    """The progress tail of one read."""

    ids: frozenset[int]
    oldest: tuple[datetime, int] | None
    full: bool

    def includes(self, w: Write) -> bool:
        """Whether the read shows ``w``, or shows a full tail of events all newer than it
        (``w`` was ranked out of the tail, so the state it shows has ``w`` committed)."""
        if w.id in self.ids:
            return True
        return self.full and self.oldest is not None and (_when(w.created_at), w.id) < self.oldest


@dataclass(frozen=True)
class ReadRecord:
    hub: str
    sent: float
    received: float
    status: int
    cache: str
    revision: int | None
    seen: Seen | None
    token: Write | None
    """The write whose causal token the read sent, if any."""


@dataclass
class Load:
    """Writers and readers against ``hubs``; every request is recorded."""

    client: httpx.AsyncClient
    hubs: list[Hub]
    writes: list[Write] = field(default_factory=list)
    reads: list[ReadRecord] = field(default_factory=list)
    failed_writes: list[tuple[str, int | str]] = field(default_factory=list)
    failed_reads: list[tuple[str, str]] = field(default_factory=list)
    errors_5xx: int = 0
    transport_errors: int = 0

    async def writer(self, n: int, end: float, interval: float) -> None:
        """Post a progress event every ``interval`` seconds, rotating over the hubs."""
        hubs = itertools.cycle(self.hubs[n % len(self.hubs) :] + self.hubs[: n % len(self.hubs)])
        next_at = time.monotonic()
        i = 0
        while (now := time.monotonic()) < end:
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += interval
            hub = next(hubs)
            try:
                self.writes.append(await post_progress(self.client, hub, f"w{n}-{i}"))
            except AssertionError as exc:
                self.failed_writes.append((hub.name, str(exc)[:200]))
                status = exc.args[0][0] if exc.args and isinstance(exc.args[0], tuple) else 0
                if isinstance(status, int) and status >= 500:
                    self.errors_5xx += 1
            except httpx.TransportError as exc:
                self.transport_errors += 1
                self.failed_writes.append((hub.name, repr(exc)[:200]))
            i += 1

    async def reader(self, n: int, end: float, interval: float, token_every: int) -> None:
        """Read ``/state/summary`` round-robin over the hubs; every ``token_every``-th read
        sends the causal token of the newest acknowledged write."""
        hubs = itertools.cycle(self.hubs[n % len(self.hubs) :] + self.hubs[: n % len(self.hubs)])
        for i in itertools.count():
            if time.monotonic() >= end:
                return
            hub = next(hubs)
            token = self._newest() if token_every and i % token_every == token_every - 1 else None
            headers = {"X-Freshkeep-Min-Revision": token.token} if token is not None else {}
            sent = time.monotonic()
            try:
                r = await self.client.get(f"{hub.base_url}/state/summary", headers=headers)
            except httpx.TransportError as exc:
                self.transport_errors += 1
                self.failed_reads.append((hub.name, repr(exc)[:200]))
                continue
            received = time.monotonic()
            if r.status_code >= 500:
                self.errors_5xx += 1
            self.reads.append(_record(hub, sent, received, r, token))
            await asyncio.sleep(interval)

    def _newest(self) -> Write | None:
        return max(self.writes, key=lambda w: w.acked) if self.writes else None

    async def run(
        self,
        seconds: float,
        *,
        writers: int,
        write_interval: float,
        readers: int,
        read_interval: float,
        token_every: int = 3,
    ) -> None:
        end = time.monotonic() + seconds
        await asyncio.gather(
            *(self.writer(n, end, write_interval) for n in range(writers)),
            *(self.reader(n, end, read_interval, token_every) for n in range(readers)),
        )


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _record(
    hub: Hub, sent: float, received: float, r: httpx.Response, token: Write | None
) -> ReadRecord:
    seen = None
    revision = None
    if r.status_code == 200:
        recent = r.json()["recent_progress"]
        ids = frozenset(ev["id"] for ev in recent)
        oldest = min(((_when(ev["created_at"]), ev["id"]) for ev in recent), default=None)
        seen = Seen(ids, oldest, len(recent) >= RECENT)
        rev = parse_revision(r.headers["x-freshkeep-revision"]).get("table:progress_events")
        revision = rev if isinstance(rev, int) else None
    return ReadRecord(
        hub.name,
        sent,
        received,
        r.status_code,
        r.headers.get("x-freshkeep-cache", ""),
        revision,
        seen,
        token,
    )


def check(
    load: Load, *, fresh_bound: float, stale_bound: float, settings: dict[str, Any]
) -> dict[str, Any]:
    """Check every read against the writes acknowledged before it was sent.

    - a read answered ``hit``/``miss``/``section`` must include every write acknowledged more
      than ``fresh_bound`` seconds before it was sent; a ``stale`` (or ``error-stale``) one,
      every write acknowledged more than ``stale_bound`` seconds before;
    - a read that sent a causal token must include the token's write, and every write with a
      revision at most the token's (zero tolerance);
    - every read must include every write whose revision is at most the revision of
      ``progress_events`` it reports in ``X-Freshkeep-Revision`` (zero tolerance).

    Returns the report: counts, the staleness ages (seconds between the oldest acknowledged
    write a read misses and the read), and every violation.
    """
    writes = sorted(load.writes, key=lambda w: w.acked)
    ok_reads = [r for r in load.reads if r.seen is not None]
    ages: list[float] = []
    ages_by_cache: dict[str, list[float]] = {}
    bound_violations: list[dict[str, Any]] = []
    token_violations: list[dict[str, Any]] = []
    revision_violations: list[dict[str, Any]] = []
    token_reads = 0
    for read in ok_reads:
        assert read.seen is not None
        missing = [w for w in writes if w.acked < read.sent and not read.seen.includes(w)]
        age = read.sent - missing[0].acked if missing else 0.0
        if missing:
            ages.append(age)
            ages_by_cache.setdefault(read.cache, []).append(age)
        bound = stale_bound if read.cache in ("stale", "error-stale") else fresh_bound
        if age > bound:
            bound_violations.append(
                {"hub": read.hub, "cache": read.cache, "age": round(age, 3), "bound": bound}
            )
        if read.token is not None:
            token_reads += 1
            t = read.token
            bad = [w.id for w in writes if w.revision <= t.revision and not read.seen.includes(w)]
            if not read.seen.includes(t) or bad:
                token_violations.append(
                    {"hub": read.hub, "cache": read.cache, "token": t.token, "missing": bad[:10]}
                )
        if read.revision is not None:
            bad = [
                w.id for w in writes if w.revision <= read.revision and not read.seen.includes(w)
            ]
            if bad:
                revision_violations.append(
                    {"hub": read.hub, "revision": read.revision, "missing": bad[:10]}
                )
    latencies = [r.received - r.sent for r in load.reads]
    stale = len(ages)
    return {
        "settings": settings,
        "writes": len(writes),
        "failed_writes": len(load.failed_writes),
        "reads": len(load.reads),
        "reads_by_hub": dict(Counter(r.hub for r in load.reads)),
        "reads_by_cache_status": dict(Counter(r.cache for r in load.reads)),
        "read_latency_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "slow_reads": [
            {"hub": r.hub, "cache": r.cache, "token": r.token is not None, "s": r.received - r.sent}
            for r in load.reads
            if r.received - r.sent > 1.0
        ][:20],
        "responses_5xx": load.errors_5xx,
        "transport_errors": load.transport_errors,
        "failed_requests": (load.failed_writes + load.failed_reads)[:20],
        "stale_reads": stale,
        "stale_share": round(stale / len(ok_reads), 4) if ok_reads else 0.0,
        "staleness_age_s": {
            "p50": round(percentile(ages, 50), 3) if ages else 0.0,
            "p99": round(percentile(ages, 99), 3) if ages else 0.0,
            "max": round(max(ages), 3) if ages else 0.0,
            "max_by_cache_status": {k: round(max(v), 3) for k, v in ages_by_cache.items()},
        },
        "bound_violations": bound_violations[:20],
        "bound_violation_count": len(bound_violations),
        "token_reads": token_reads,
        "token_violations": token_violations[:20],
        "token_violation_count": len(token_violations),
        "revision_violations": revision_violations[:20],
        "revision_violation_count": len(revision_violations),
    }
