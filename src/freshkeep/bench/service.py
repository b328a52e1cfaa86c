"""Service level: the hub's summary under uvicorn, loaded from another process on loopback.

One server process (:mod:`freshkeep.bench.server`) serves every mode from the same application
and database; for each mode, a load generator process (:mod:`freshkeep.bench.loadgen`) runs
two phases: ``read`` (no writes: every cache is hit) and ``write`` (a writer changes the data
at a fixed rate and every response is checked against the committed history).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from freshkeep.bench.progress import NullReporter, Reporter


@dataclass(frozen=True)
class Mode:
    """One way of serving the summary."""

    name: str
    path: str
    what: str
    bound_s: float = 0.0
    """Staleness the mode promises to stay within (seconds)."""
    must_label: bool = False
    """Whether a stale response must say so (``X-Freshkeep-Cache: stale``) to be in bound."""
    check: bool = True
    """Whether responses are checked for freshness (not for the floor's fixed bytes)."""


MODES: tuple[Mode, ...] = (
    Mode("floor", "/bench/floor", "bare endpoint returning pre-encoded bytes", check=False),
    Mode(
        "floor-fastapi",
        "/bench/floor-fastapi",
        "the same bytes from a bare FastAPI route (no parameters)",
        check=False,
    ),
    Mode(
        "freshkeep",
        "/bench/freshkeep",
        "freshkeep view through serve() (hub policy: swr, max_stale 30 s; probe=interval)",
        bound_s=30.0,
        must_label=True,
    ),
    Mode(
        "freshkeep-fastapi",
        "/state/summary",
        "the same view through the hub's FastAPI route",
        bound_s=30.0,
        must_label=True,
    ),
    Mode("ttl", "/bench/ttl", "fixed 15 s TTL, in-process, single-flight rebuild", bound_s=15.0),
    Mode(
        "maxprobe",
        "/bench/maxprobe",
        "MAX(updated_at)-style probe of each of the 12 tables on every read",
    ),
    Mode("uncached", "/bench/uncached", "summary built on every request"),
)
MODE_NAMES = tuple(m.name for m in MODES)


@dataclass
class ServiceConfig:
    """How much the service level measures."""

    seed_tasks: int = 10_000
    read_s: float = 3.0
    read_rounds: int = 3
    write_s: float = 16.0
    warmup_s: float = 0.5
    write_rate: float = 4.0
    connections: int = 16
    modes: tuple[str, ...] = MODE_NAMES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        resp.read()
        return int(resp.status)


class _Server:
    def __init__(self, db: str, seed_tasks: int, log_path: str) -> None:
        self.port = _free_port()
        self.log = open(log_path, "wb")  # closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "freshkeep.bench.server",
            "--db",
            db,
            "--port",
            str(self.port),
            "--seed-tasks",
            str(seed_tasks),
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = log_path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bench server exited: {self._tail()}")
            try:
                if _get(self.base + "/bench/floor") == 200:
                    return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"the bench server did not answer in {timeout:g} s: {self._tail()}")

    def _tail(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-2000:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _phase(
    server: _Server,
    mode: Mode,
    config: ServiceConfig,
    *,
    write: bool,
    tmp: str,
    reporter: Reporter,
) -> dict[str, Any]:
    out = os.path.join(tmp, f"{mode.name}-{'write' if write else 'read'}.json")
    duration = config.write_s if write else config.read_s
    cmd = [
        sys.executable,
        "-m",
        "freshkeep.bench.loadgen",
        "--port",
        str(server.port),
        "--path",
        mode.path,
        "--connections",
        str(config.connections),
        "--warmup",
        str(config.warmup_s),
        "--duration",
        str(duration),
        "--bound",
        str(mode.bound_s),
        "--out",
        out,
    ]
    if mode.must_label:
        cmd.append("--must-label")
    if write:
        cmd += ["--write-rate", str(config.write_rate)]
        if not mode.check:
            cmd.append("--no-check")
    log_path = out.removesuffix(".json") + ".log"
    total = config.warmup_s + duration
    started = time.monotonic()
    shown = 0.0
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                time.sleep(0.1)
                elapsed = min(time.monotonic() - started, total)
                reporter.advance(elapsed - shown)
                shown = elapsed
                if time.monotonic() - started > total + 60.0:
                    proc.kill()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    reporter.advance(total - shown)
    if proc.returncode != 0 or not os.path.exists(out):
        with open(log_path, "rb") as f:
            output = f.read()[-2000:].decode(errors="replace")
        raise RuntimeError(f"the load generator failed for {mode.name}: {output}")
    with open(out, "rb") as f:
        result: dict[str, Any] = json.load(f)
    return result


def run_service(
    config: ServiceConfig, reporter: Reporter | None = None, workdir: str | None = None
) -> dict[str, Any]:
    """Run the service level; return its figures per mode and phase."""
    rep = reporter if reporter is not None else NullReporter()
    modes = [m for m in MODES if m.name in config.modes]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rep.stage(f"service: starting the hub ({config.seed_tasks:,} tasks) under uvicorn", 1)
        server = _Server(
            os.path.join(tmp, "bench.db"), config.seed_tasks, os.path.join(tmp, "server.log")
        )
        try:
            server.wait_ready(timeout=120.0)
            rep.advance()
            # Read phases in interleaved rounds (every mode once per round), so a burst of
            # load from elsewhere on the machine does not land on one mode only; each mode
            # keeps its median round.
            reads: dict[str, list[dict[str, Any]]] = {m.name: [] for m in modes}
            for r in range(config.read_rounds):
                for mode in modes:
                    rep.stage(
                        f"service: {mode.name}, read phase {r + 1}/{config.read_rounds}",
                        config.warmup_s + config.read_s,
                    )
                    reads[mode.name].append(
                        _phase(server, mode, config, write=False, tmp=tmp, reporter=rep)
                    )
            for mode in modes:
                rep.stage(f"service: {mode.name}, write phase", config.warmup_s + config.write_s)
                write = _phase(server, mode, config, write=True, tmp=tmp, reporter=rep)
                rounds = sorted(reads[mode.name], key=lambda x: float(x["rps"]))
                results[mode.name] = {
                    "path": mode.path,
                    "what": mode.what,
                    "bound_s": mode.bound_s,
                    "read": rounds[(len(rounds) - 1) // 2],
                    "read_rounds_rps": [x["rps"] for x in reads[mode.name]],
                    "write": write,
                }
        finally:
            server.stop()
    from freshkeep.bench.server import event_loop, http_impl

    return {
        "seed_tasks": config.seed_tasks,
        "read_s": config.read_s,
        "read_rounds": config.read_rounds,
        "write_s": config.write_s,
        "warmup_s": config.warmup_s,
        "write_rate": config.write_rate,
        "connections": config.connections,
        "server": {"loop": event_loop(), "http": http_impl(), "workers": 1},
        "modes": results,
    }
