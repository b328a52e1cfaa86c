"""A PostgreSQL primary and a streaming replica of it, started by a test in a temporary
directory on free ports (initdb, pg_ctl, pg_basebackup), with password logins.

PostgreSQL refuses to run as root: as root, the servers run as the ``postgres`` OS user
(``runuser``) in a directory it owns. When the binaries or that user are missing, the test
is skipped, or fails under ``FRESHKEEP_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES

TOOLS = ("initdb", "pg_ctl", "pg_basebackup")


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    candidates: list[str] = []
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and all((Path(c) / t).exists() for t in TOOLS):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pair:
    """The running pair: async SQLAlchemy URLs of the primary and of the replica."""

    primary_url: str
    replica_url: str


def _unavailable(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(message + " and FRESHKEEP_REQUIRE_SERVICES=1")
    pytest.skip(message)


@contextlib.contextmanager
def streaming_pair() -> Iterator[Pair]:
    """Start a primary and its streaming replica; stop both and remove their files after."""
    bindir = _bindir()
    if bindir is None:
        _unavailable("PostgreSQL's initdb, pg_ctl and pg_basebackup are not installed")
        raise AssertionError  # unreachable: skip or fail raised
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb refuses root: run the servers as the postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no postgres user to run PostgreSQL as")
        runuser = shutil.which("runuser")
        if runuser is None:
            _unavailable("running as root and runuser is missing")
        prefix = [str(runuser), "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="fk-replica-"))
    password = secrets.token_hex(12)
    env = {**os.environ, "PGPASSWORD": password}
    primary_port, replica_port = _free_port(), _free_port()
    started: list[Path] = []

    def run(*args: str | Path) -> None:
        done = subprocess.run(
            [*prefix, *map(str, args)], capture_output=True, text=True, env=env, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(data: Path, port: int) -> None:
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c shared_buffers=16MB -c max_connections=40 -c hot_standby_feedback=on"
        )
        run(bindir / "pg_ctl", "-D", data, "-o", options, "-l", f"{data}.log", "-w", "start")
        started.append(data)

    try:
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        primary, replica = root / "primary", root / "replica"
        try:
            run(
                bindir / "initdb", "-D", primary, "-U", "postgres", "-N",
                "--auth=scram-sha-256", f"--pwfile={pwfile}",
            )  # fmt: skip
            start(primary, primary_port)
            run(
                bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", str(primary_port),
                "-U", "postgres", "-D", replica, "-R", "-X", "stream", "-c", "fast",
            )  # fmt: skip
            start(replica, replica_port)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            _unavailable(f"cannot start a PostgreSQL primary and replica: {exc}")
        url = "postgresql+asyncpg://postgres:{pw}@127.0.0.1:{port}/postgres"
        yield Pair(
            url.format(pw=password, port=primary_port), url.format(pw=password, port=replica_port)
        )
    finally:
        for data in reversed(started):
            with contextlib.suppress(Exception):
                run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
