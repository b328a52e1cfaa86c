"""FastAPI level: the hub's ``GET /state/summary`` beside bare Starlette and FastAPI routes.

Only run when asked (``freshkeep bench --level fastapi``). One server process
(:mod:`freshkeep.bench.server`: the hub under uvicorn, one worker) serves the three routes,
each returning the same bytes:

- ``/bench/floor-starlette``: a bare Starlette endpoint returning the summary's pre-encoded
  bytes (captured once), matched before every other route: the least a route can cost;
- ``/bench/floor-fastapi``: a FastAPI route with no parameters returning the same bytes,
  matched where the hub's own routes are: what any FastAPI route costs;
- ``/state/summary``: the hub's route (:func:`~freshkeep.integrations.routes.cached_route`),
  whose hit is answered by :class:`~freshkeep.integrations.routes.HitFastPath` ahead of
  FastAPI's routing (ETag, status and revision headers).

The targets: the hub's route serves at least 90% of the bare Starlette endpoint's req/s and
at least 1.5 times the bare FastAPI route's, measured side by side in the same run.

Each round loads each route in turn, first with wrk (``wrk -t1 -c16 --latency``, when it is
installed; otherwise a note says so) then with the load generator
(:mod:`freshkeep.bench.loadgen`), so that a burst of load from elsewhere on the machine weighs
on every route. Per route and tool: req/s, p99 and the server's CPU time per request (from
``/proc``, on Linux). The ratios (hub / bare) are the median of the per-round ratios, with
their smallest and largest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from freshkeep.bench.noise import WITHIN_NOISE, side_by_side, within_noise
from freshkeep.bench.progress import NullReporter, Reporter

STARLETTE = "/bench/floor-starlette"
BARE = "/bench/floor-fastapi"
HUB = "/state/summary"
ROUTES: tuple[tuple[str, str], ...] = (
    ("bare Starlette endpoint", STARLETTE),
    ("bare FastAPI route", BARE),
    ("hub's route", HUB),
)
TARGETS: tuple[tuple[str, str, float], ...] = (
    (STARLETTE, "bare Starlette", 0.90),
    (BARE, "bare FastAPI", 1.5),
)
"""Per bare route: its name, and the least req/s of the hub's route as a share of its own."""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class FastAPIConfig:
    """How much the FastAPI level measures."""

    seed_tasks: int = 10_000
    rounds: int = 5
    seconds: float = 3.0
    warmup_s: float = 1.0
    connections: int = 16
    wrk: str = "wrk"
    """The wrk executable (looked up on ``PATH``); when it is not found, the level runs the
    load generator only and notes it."""


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value.strip())
    if m is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(m[1]) * _UNITS[m[2]]


def parse_wrk(text: str) -> dict[str, Any]:
    """The figures of ``wrk --latency``'s output: req/s, requests, errors, latency in ms."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    done = re.search(r"(\d+) requests in", text)
    if rps is None or done is None:
        raise ValueError(f"unexpected wrk output: {text[-500:]!r}")
    latency = {
        f"p{m[1]}": _ms(m[2])
        for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", text, re.MULTILINE)
    }
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socket is not None:
        errors += sum(int(n) for n in socket.groups())
    return {
        "rps": float(rps[1]),
        "requests": int(done[1]),
        "errors": errors,
        "latency_ms": latency,
    }


def _cpu_s(pid: int) -> float | None:
    """The process's user + system CPU time (s), from ``/proc``; ``None`` elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(wrk: str, url: str, seconds: int, connections: int) -> dict[str, Any]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {proc.stderr[-1000:] or proc.stdout[-1000:]}")
    return parse_wrk(proc.stdout)


def _loadgen(port: int, path: str, seconds: float, connections: int, tmp: str) -> dict[str, Any]:
    out = os.path.join(tmp, "loadgen.json")
    cmd = [sys.executable, "-m", "freshkeep.bench.loadgen", "--port", str(port), "--path", path]
    cmd += ["--connections", str(connections), "--warmup", "0", "--duration", str(seconds)]
    cmd += ["--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed on {path}: {proc.stderr[-1000:]}")
    with open(out, "rb") as f:
        result: dict[str, Any] = json.load(f)
    return result


def _measure(pid: int, run: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    before = _cpu_s(pid)
    result = run(*args)
    after = _cpu_s(pid)
    n = result["requests"]
    cpu = None if before is None or after is None or not n else (after - before) / n * 1e6
    return {
        "rps": result["rps"],
        "requests": n,
        "errors": result["errors"],
        "p50_ms": result["latency_ms"].get("p50", 0.0),
        "p99_ms": result["latency_ms"].get("p99", 0.0),
        "cpu_us": cpu,
    }


def _check(base: str) -> None:
    """Every route answers 200 with the same body; the hub's answers a hit."""
    bodies = []
    status = None
    for _, path in ROUTES:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            bodies.append(resp.read())
            if path == HUB:
                status = resp.headers.get("x-freshkeep-cache")
    if len(set(bodies)) != 1:
        raise RuntimeError(f"{', '.join(p for _, p in ROUTES)} do not serve the same bytes")
    if status != "hit":
        raise RuntimeError(f"{HUB} did not answer a hit after a warm-up ({status})")


def _ratios(rounds: dict[str, list[dict[str, Any]]], key: str, bare: str) -> dict[str, Any]:
    pairs = side_by_side([r[key] for r in rounds[HUB]], [r[key] for r in rounds[bare]])
    if not pairs:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "rounds": []}
    return {
        "median": statistics.median(pairs),
        "min": min(pairs),
        "max": max(pairs),
        "rounds": pairs,
    }


def summarize(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per route the median of each figure over the rounds; per bare route the hub / bare
    ratios (req/s and p99) and whether the req/s ratio meets its target (:data:`TARGETS`)."""
    routes = {}
    for path, rs in rounds.items():
        cpu = [r["cpu_us"] for r in rs if r["cpu_us"] is not None]
        routes[path] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "cpu_us": statistics.median(cpu) if cpu else None,
            "errors": sum(r["errors"] for r in rs),
        }
    against = {}
    for bare, name, target in TARGETS:
        if bare not in rounds:
            continue
        rps = _ratios(rounds, "rps", bare)
        met = rps["median"] >= target
        against[bare] = {
            "name": name,
            "target": target,
            "rps_ratio": rps,
            "p99_ratio": _ratios(rounds, "p99_ms", bare),
            "met": met,
            # what misses its target differs from it by less than the rounds' spread
            "within_noise": met or within_noise([r / target for r in rps["rounds"]]),
        }
    return {
        "routes": routes,
        "against": against,
        "met": bool(against) and all(a["met"] for a in against.values()),
    }


def run_fastapi(config: FastAPIConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the FastAPI level; return its figures per tool, route and round."""
    from freshkeep.bench.server import event_loop, http_impl
    from freshkeep.bench.service import _Server

    rep = reporter if reporter is not None else NullReporter()
    wrk = shutil.which(config.wrk)
    notes = [] if wrk else ["wrk is not installed: the FastAPI level ran the load generator only"]
    tools = (["wrk"] if wrk else []) + ["loadgen"]
    seconds = max(1, round(config.seconds))  # wrk takes whole seconds
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {path: [] for _, path in ROUTES} for t in tools
    }
    with tempfile.TemporaryDirectory() as tmp:
        rep.stage(f"fastapi: starting the hub ({config.seed_tasks:,} tasks) under uvicorn", 1)
        server = _Server(
            os.path.join(tmp, "bench.db"), config.seed_tasks, os.path.join(tmp, "server.log")
        )
        try:
            server.wait_ready(timeout=120.0)
            _check(server.base)
            rep.advance()
            pid = server.proc.pid
            rep.stage("fastapi: warm-up", len(ROUTES))
            for _, path in ROUTES:
                if wrk:
                    warmup = max(1, round(config.warmup_s))
                    _wrk(wrk, server.base + path, warmup, config.connections)
                else:
                    _loadgen(server.port, path, config.warmup_s, config.connections, tmp)
                rep.advance()
            for r in range(config.rounds):
                rep.stage(f"fastapi: round {r + 1}/{config.rounds}", len(tools) * len(ROUTES))
                for tool in tools:
                    for _, path in ROUTES:
                        if wrk is not None and tool == "wrk":
                            url = server.base + path
                            result = _measure(pid, _wrk, wrk, url, seconds, config.connections)
                        else:
                            args = (server.port, path, seconds, config.connections, tmp)
                            result = _measure(pid, _loadgen, *args)
                        rounds[tool][path].append(result)
                        rep.advance()
            _check(server.base)  # after the load too: the same bytes, and a hit
        finally:
            server.stop()
    return {
        "seed_tasks": config.seed_tasks,
        "rounds": config.rounds,
        "seconds": seconds,
        "connections": config.connections,
        "server": {"loop": event_loop(), "http": http_impl(), "workers": 1},
        "wrk": _wrk_version(wrk) if wrk else None,
        "routes": [{"name": n, "path": p} for n, p in ROUTES],
        "tools": {t: {"rounds": rounds[t], **summarize(rounds[t])} for t in tools},
        "notes": notes,
    }


def _wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    first = (proc.stdout or proc.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def _ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} ({r['min']:.2f} - {r['max']:.2f})"


def _met(a: dict[str, Any]) -> str:
    return "yes" if a["met"] else WITHIN_NOISE if a["within_noise"] else "**no**"


def markdown_lines(f: dict[str, Any]) -> list[str]:
    """The FastAPI level's section of the report (lines under 100 columns)."""
    import textwrap

    def wrap(text: str) -> str:
        return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)

    s = f["server"]
    goals = " and ".join(f"≥ {target:.0%} of the {name}'s" for _, name, target in TARGETS)
    lines = [
        "## FastAPI route: the hub's `GET /state/summary` beside bare Starlette and FastAPI",
        "",
        wrap(
            f"One uvicorn process ({s['loop']}, {s['http']}, 1 worker), the hub seeded with "
            f"{f['seed_tasks']:,} tasks. The bare Starlette endpoint (`{STARLETTE}`, matched "
            f"first) and the bare FastAPI route (`{BARE}`) return the summary's pre-encoded "
            "bytes; the hub's route serves a hit of its view, answered by `HitFastPath` "
            f"ahead of FastAPI's routing. {f['rounds']} rounds; in each, each tool loads each "
            f"route for {f['seconds']:g} s over {f['connections']} keep-alive connections"
            + (f" ({f['wrk']}: `wrk -t1 -c{f['connections']} --latency`)" if f["wrk"] else "")
            + ". Figures: medians over the rounds; CPU: the server's user + system time per "
            "request. Ratios: hub / bare, the median of the rounds' ratios (min - max). "
            f"Targets (req/s of the hub's route): {goals}; *{WITHIN_NOISE}*: a miss by less "
            "than the spread of its rounds' ratios."
        ),
        "",
        "| tool | route | req/s | p99 ms | server CPU µs/req | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for tool, t in f["tools"].items():
        for name, path in ROUTES:
            if path not in t["routes"]:
                continue
            r = t["routes"][path]
            cpu = f"{r['cpu_us']:,.0f}" if r["cpu_us"] is not None else ""
            lines.append(
                f"| {tool} | {name} `{path}` | {r['rps']:,.0f} | {r['p99_ms']:.2f} | {cpu} "
                f"| {r['errors']} |"
            )
    lines += [
        "",
        "| tool | hub / bare | req/s ratio | target | met | p99 ratio |",
        "|---|---|---:|---:|---|---:|",
    ]
    for tool, t in f["tools"].items():
        for a in t["against"].values():
            lines.append(
                f"| {tool} | {a['name']} | {_ratio(a['rps_ratio'])} | ≥ {a['target']:.2f} "
                f"| {_met(a)} | {_ratio(a['p99_ratio'])} |"
            )
    for note in f.get("notes", []):
        lines += ["", wrap(f"Note: {note}.")]
    lines.append("")
    return lines


def targets(f: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The level's targets per tool: the hub's req/s against each bare route's."""
    if not f:
        return []
    out = []
    for tool, t in f["tools"].items():
        for a in t["against"].values():
            ratio = a["rps_ratio"]["median"]
            noise = "" if a["met"] or not a["within_noise"] else f": {WITHIN_NOISE}"
            out.append(
                {
                    "target": f"hub route ≥ {a['target']:.0%} of {a['name']} req/s ({tool})",
                    "measured": f"req/s {ratio:.0%}{noise}",
                    "met": a["met"],
                }
            )
    return out
