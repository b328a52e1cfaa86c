"""``freshkeep demo`` run for real, as a subprocess on a free port, for the end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class DemoProcess:
    """A running ``freshkeep demo``: its process, base URL and log file."""

    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def output(self) -> str:
        """What it printed so far."""
        return self.log.read_text()

    def stop(self) -> None:
        """Terminate it (SIGTERM: a graceful shutdown) and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
                self.proc.kill()
                self.proc.wait()


@contextmanager
def demo_process(
    tmp_path: Path,
    *,
    seed_tasks: int = 50,
    env: dict[str, str] | None = None,
    ready: str = "/state/stats",
    timeout: float = 30.0,
) -> Iterator[DemoProcess]:
    """Start ``freshkeep demo`` on ``tmp_path/demo.db`` (no ``FRESHKEEP_*`` variable of this
    process, plus ``env``) and yield it once ``GET ready`` answers 200 or 503; stop it after."""
    port = free_port()
    log = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "freshkeep.cli", "demo", "--port", str(port)]
    cmd += ["--db", str(tmp_path / "demo.db"), "--seed-tasks", str(seed_tasks)]
    cmd += ["--log-level", "warning"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHKEEP_")}
    base_env["COLUMNS"] = "200"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=base_env | (env or {}), stdout=out, stderr=subprocess.STDOUT
        )
    demo = DemoProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=demo.base, timeout=2.0) as client:
            while True:
                assert proc.poll() is None, f"freshkeep demo exited:\n{demo.output()}"
                assert time.monotonic() < deadline, f"the hub did not start:\n{demo.output()}"
                try:
                    if client.get(ready).status_code in (200, 503):
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        yield demo
    finally:
        demo.stop()
