"""The benchmark's load generator, run as its own process on loopback.

``python -m freshkeep.bench.loadgen --port P --path /bench/freshkeep --duration 5 --out f.json``

Keeps ``--connections`` keep-alive HTTP/1.1 connections busy (closed loop: each sends its next
request when the previous response is complete) on raw asyncio protocols, for ``--warmup`` then
``--duration`` seconds; bounded in time and by ``--max-requests``.

With ``--write-rate R`` a writer on its own connection makes one change every ``1/R`` seconds
through the hub's API, in turn: a progress event (the summary's ``progress`` section), a
decision (the ``core`` section) and a task (both). Every summary served is then checked
against that history: a response is *stale* when it misses a write whose response had been
received before the request was sent (so the write had committed); its *age* is the time from
the receipt of the oldest write it misses to the sending of the request. Both are lower bounds:
nothing is called stale that might not be.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import importlib.util
import re
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import orjson

_TOTALS = re.compile(rb'"totals":\{"topics":\d+,"workstreams":\d+,"tasks":(\d+),"decisions":(\d+)')
_PROGRESS = re.compile(rb'"recent_progress":\[\{"id":(\d+)')
_LABEL = b"x-freshkeep-cache: "
_STALE_LABELS = frozenset({"stale", "error-stale"})
KINDS = ("progress", "decision", "task")


def observe(body: bytes) -> tuple[int, int, int] | None:
    """What a summary shows of the writer's history: (newest progress id, decisions, tasks)."""
    m = _TOTALS.search(body)
    if m is None:
        return None
    i = body.rfind(b'"recent_progress":[')
    p = _PROGRESS.match(body, i) if i >= 0 else None
    return (int(p[1]) if p else 0), int(m[2]), int(m[1])


def percentiles(values: list[float], points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (and max, mean) of ``values``; zeros when there are none."""
    if not values:
        return {**{f"p{p:g}": 0.0 for p in points}, "max": 0.0, "mean": 0.0}
    s = sorted(values)
    out = {f"p{p:g}": s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))] for p in points}
    return {**out, "max": s[-1], "mean": sum(s) / len(s)}


@dataclass
class _Run:
    request: bytes
    start: int
    measure_from: int
    deadline: int
    max_requests: int
    check: bool
    latencies: array[int] = field(default_factory=lambda: array("q"))
    sends: array[int] = field(default_factory=lambda: array("q"))
    seen: list[tuple[int, int, int] | None] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    label_counts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    sent: int = 0

    def on_response(self, t0: int, head: bytes, body: bytes) -> None:
        t1 = time.perf_counter_ns()
        if t0 < self.measure_from:
            return
        if head[9:12] != b"200":
            self.errors += 1
            return
        self.latencies.append(t1 - t0)
        i = head.find(_LABEL)
        label = "" if i < 0 else head[i + len(_LABEL) : head.find(b"\r", i)].decode()
        self.label_counts[label] += 1
        if self.check:
            self.sends.append(t0)
            self.seen.append(observe(body))
            self.labels.append(label)


class _Conn(asyncio.Protocol):
    def __init__(self, run: _Run, done: asyncio.Future[None]) -> None:
        self.run = run
        self.done = done
        self.buf = bytearray()
        self.need = -1
        self.body_at = 0
        self.head = b""
        self.t0 = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.send()

    def send(self) -> None:
        run = self.run
        assert self.transport is not None
        now = time.perf_counter_ns()
        if now >= run.deadline or run.sent >= run.max_requests:
            self.transport.close()
            return
        run.sent += 1
        self.t0 = now
        self.transport.write(run.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                i = head.find(b"content-length:")
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else None]) if i >= 0 else 0
                self.head, self.body_at, self.need = head, end + 4, end + 4 + length
            if len(buf) < self.need:
                return
            body = bytes(buf[self.body_at : self.need])
            del buf[: self.need]
            self.need = -1
            self.run.on_response(self.t0, self.head, body)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Client:
    """A plain sequential HTTP/1.1 client for the writer (and the baseline read)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = b"" if body is None else orjson.dumps(body)
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15 : head.find(b"\r\n", i)]) if i >= 0 else 0
        return int(head[9:12]), await self.reader.readexactly(length)


@dataclass
class _Writes:
    acks: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    expected: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


async def _write_loop(
    client: _Client, rate: float, deadline: int, base: tuple[int, int, int], log: _Writes
) -> None:
    _, decisions, tasks = base
    period_ns = int(1e9 / rate)
    at = time.perf_counter_ns()
    k = 0
    while True:
        now = time.perf_counter_ns()
        if now >= deadline:
            return
        if at > now:
            await asyncio.sleep((at - now) / 1e9)
            if time.perf_counter_ns() >= deadline:
                return
        kind = KINDS[k % len(KINDS)]
        t0 = time.perf_counter_ns()
        if kind == "progress":
            payload = {"topic_id": 1, "event_type": "note", "summary": f"bench write {k}"}
            status, body = await client.request("POST", "/progress", payload | {"author": "bench"})
            expected = orjson.loads(body)["id"] if status == 201 else 0
        elif kind == "decision":
            payload = {"topic_id": 1, "title": f"bench decision {k}", "status": "open"}
            status, _ = await client.request("POST", "/decisions", payload)
            expected = decisions = decisions + (status == 201)
        else:
            payload = {"workstream_id": 1, "title": f"bench task {k}", "status": "todo"}
            status, _ = await client.request("POST", "/tasks", payload)
            expected = tasks = tasks + (status == 201)
        t1 = time.perf_counter_ns()
        if status == 201:
            log.acks[kind].append(t1)
            log.expected[kind].append(expected)
            log.latencies.append((t1 - t0) / 1e6)
        else:
            log.errors += 1
        k += 1
        at += period_ns


def freshness(run: _Run, log: _Writes, bound: float, must_label: bool) -> dict[str, Any]:
    """Check every response of ``run`` against the writer's history ``log``.

    A stale response is *beyond bound* when it is older than ``bound`` seconds or, with
    ``must_label``, when it does not say it is stale (``X-Freshkeep-Cache: stale``).
    """
    ages: list[float] = []
    labelled = beyond = unknown = 0
    for sent, seen, label in zip(run.sends, run.seen, run.labels, strict=True):
        if seen is None:
            unknown += 1
            continue
        age_ns = 0
        for kind, observed in zip(KINDS, seen, strict=True):
            acks = log.acks[kind]
            n = bisect.bisect_right(acks, sent)
            if n and log.expected[kind][n - 1] > observed:
                oldest = bisect.bisect_right(log.expected[kind], observed, 0, n)
                age_ns = max(age_ns, sent - acks[oldest])
        if not age_ns:
            continue
        age = age_ns / 1e9
        ages.append(age * 1000)
        is_labelled = label in _STALE_LABELS
        labelled += is_labelled
        if age > bound or (must_label and not is_labelled):
            beyond += 1
    checked = len(run.sends) - unknown
    return {
        "checked": checked,
        "unreadable": unknown,
        "stale": len(ages),
        "stale_share": len(ages) / checked if checked else 0.0,
        "stale_labelled": labelled,
        "stale_unlabelled": len(ages) - labelled,
        "bound_s": bound,
        "beyond_bound": beyond,
        "stale_age_ms": percentiles(ages),
    }


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Run one load phase as ``args`` say; return its figures."""
    loop = asyncio.get_running_loop()
    request = f"GET {args.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    writes: _Writes | None = None
    client: _Client | None = None
    base: tuple[int, int, int] | None = None
    if args.write_rate > 0:
        client = _Client(*await asyncio.open_connection(args.host, args.port))
        status, body = await client.request("GET", args.baseline_path)
        base = observe(body) if status == 200 else None
        if base is None:
            raise SystemExit(f"cannot read the baseline from {args.baseline_path} ({status})")
        writes = _Writes()
    start = time.perf_counter_ns()
    measure_from = start + int(args.warmup * 1e9)
    deadline = measure_from + int(args.duration * 1e9)
    run = _Run(
        request,
        start,
        measure_from,
        deadline,
        args.max_requests,
        check=writes is not None and args.check,
    )
    conns: list[asyncio.Future[None]] = []
    for _ in range(args.connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(partial(_Conn, run, done), args.host, args.port)
        conns.append(done)
    tasks: list[asyncio.Future[Any]] = list(conns)
    if client is not None and writes is not None and base is not None:
        tasks.append(
            asyncio.ensure_future(_write_loop(client, args.write_rate, deadline, base, writes))
        )
    grace = args.duration + args.warmup + 30.0
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=grace)
    if client is not None:
        client.writer.close()
    elapsed = (min(time.perf_counter_ns(), deadline) - measure_from) / 1e9
    lat_ms = [x / 1e6 for x in run.latencies]
    out: dict[str, Any] = {
        "path": args.path,
        "connections": args.connections,
        "duration_s": elapsed,
        "requests": len(lat_ms),
        "errors": run.errors,
        "rps": len(lat_ms) / elapsed if elapsed > 0 else 0.0,
        "latency_ms": percentiles(lat_ms),
        "labels": dict(run.label_counts),
        "writes": None,
        "freshness": None,
    }
    if writes is not None:
        out["writes"] = {
            "rate": args.write_rate,
            "count": sum(len(v) for v in writes.acks.values()),
            "by_kind": {k: len(v) for k, v in writes.acks.items()},
            "errors": writes.errors,
            "latency_ms": percentiles(writes.latencies),
        }
        if run.check:
            out["freshness"] = freshness(run, writes, args.bound, args.must_label)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run one phase and write its figures as JSON to ``--out`` (or stdout)."""
    p = argparse.ArgumentParser(prog="python -m freshkeep.bench.loadgen")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--max-requests", type=int, default=10_000_000)
    p.add_argument("--write-rate", type=float, default=0.0, help="writes per second (0: none)")
    p.add_argument("--baseline-path", default="/bench/uncached")
    p.add_argument("--no-check", dest="check", action="store_false")
    p.add_argument("--bound", type=float, default=0.0, help="staleness bound (s) of the mode")
    p.add_argument("--must-label", action="store_true", help="stale must say it is stale")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        result = uvloop.run(generate(args))
    else:  # pragma: no cover - without the bench extra
        result = asyncio.run(generate(args))
    data = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        print(data.decode())


if __name__ == "__main__":  # pragma: no cover - run as a process by the benchmark
    main()
