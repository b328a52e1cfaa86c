"""Redis servers a test starts itself: a Redis Cluster of three masters, and a primary with a
replica watched by three Sentinels.

Each server is a ``redis-server`` process on a free port, in a temporary directory, without
persistence; :meth:`Servers.stop` ends every process it started. Without the binaries
(``redis-server``, ``redis-cli``: Debian's ``redis-server`` and ``redis-tools``) a test is
skipped, or fails under ``FRESHKEEP_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REQUIRE_SERVICES

SERVICE = "mymaster"
"""The name the Sentinels monitor the primary under."""
START_TIMEOUT = 30.0
"""Seconds a server (or the cluster, or the Sentinels) may take to be ready."""


def binaries() -> tuple[str, str]:
    """The paths of ``redis-server`` and ``redis-cli``; skip (or fail) without them."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        message = "redis-server and redis-cli are needed (Debian: redis-server, redis-tools)"
        if REQUIRE_SERVICES:
            pytest.fail(message + " and FRESHKEEP_REQUIRE_SERVICES=1")
        pytest.skip(message)
    return server, cli


def free_port(*, cluster: bool = False) -> int:
    """A free port; for a cluster node, one whose cluster bus port (``port + 10000``) is free
    too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not cluster:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def wait_for(what: str, check: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    """Poll ``check`` every 50 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not ready after {timeout}s")


@dataclass
class Server:
    """One ``redis-server`` process."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2.0, **kw)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@dataclass
class Servers:
    """The processes of one set-up, in a directory of their own."""

    root: Path
    servers: list[Server] = field(default_factory=list)

    def start(self, *args: str, config: str | None = None, sentinel: bool = False) -> Server:
        server_bin, _ = binaries()
        port = free_port(cluster="--cluster-enabled" in args)
        home = self.root / str(port)
        home.mkdir(parents=True)
        log = home / "redis.log"
        command = [server_bin]
        if config is not None:
            conf = home / "redis.conf"
            conf.write_text(config.replace("$PORT", str(port)))
            command.append(str(conf))
        if sentinel:
            command.append("--sentinel")
        command += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(home)]
        command += ["--logfile", str(log)]
        if not sentinel:
            command += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([*command, *args], stdout=subprocess.DEVNULL)
        server = Server(port, proc, log)
        self.servers.append(server)

        def ready() -> bool:
            assert server.alive, f"redis-server on {port} exited:\n{server.output()}"
            return bool(server.client().ping())

        wait_for(f"redis-server on {port}", ready)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@dataclass
class Cluster:
    """A Redis Cluster of three masters, each with ``replicas`` replicas."""

    nodes: list[Server]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.nodes[:2])

    @property
    def masters(self) -> list[Server]:
        return [s for s in self.nodes if s.alive and s.client().role()[0] == b"master"]

    def keyslot(self, key: str) -> int:
        node = next(s for s in self.nodes if s.alive)
        slot: int = node.client().execute_command("CLUSTER KEYSLOT", key)
        return slot

    def owner(self, key: str) -> Server | None:
        """The running master that serves ``key``'s slot now (the others answer ``MOVED``),
        or ``None`` while none does."""
        for m in self.masters:
            try:
                m.client().exists(key)
            except redis.ResponseError:
                continue
            return m
        return None

    def healthy(self) -> bool:
        return all(
            s.client().cluster("info").get("cluster_state") == "ok" for s in self.nodes if s.alive
        )


def start_cluster(servers: Servers, *, replicas: int = 0, node_timeout_ms: int = 1000) -> Cluster:
    """Three masters (and ``replicas`` replicas each) with ``cluster-enabled``, joined by
    ``redis-cli --cluster create``. A replica takes over ``node_timeout_ms`` after its master
    stops answering."""
    _, cli = binaries()
    options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    options += ["--cluster-node-timeout", str(node_timeout_ms)]
    nodes = [servers.start(*options) for _ in range(3 * (1 + replicas))]
    addresses = [f"127.0.0.1:{m.port}" for m in nodes]
    create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas)]
    subprocess.run(
        [*create, "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT,
    )
    cluster = Cluster(nodes)
    wait_for("the cluster state", cluster.healthy)
    if replicas:
        wait_for(
            "the replicas in sync",
            lambda: all(
                s.client().info("replication").get("master_link_status") == "up"
                for s in nodes
                if s.client().role()[0] == b"slave"
            ),
        )
    return cluster


_SENTINEL_CONF = """\
port $PORT
sentinel monitor {service} 127.0.0.1 {primary} 2
sentinel down-after-milliseconds {service} {down_after}
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


@dataclass
class SentinelSet:
    """A primary, a replica and three Sentinels monitoring them as :data:`SERVICE`."""

    primary: Server
    replica: Server
    sentinels: list[Server]

    @property
    def url(self) -> str:
        return (
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
            + f"/{SERVICE}"
        )

    def primary_port(self) -> int:
        """The port of the primary the Sentinels name now."""
        for sentinel in self.sentinels:
            if sentinel.alive:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
        raise AssertionError("no Sentinel is running")

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: the replica becomes the primary, the primary its replica."""
        self.sentinels[0].client().execute_command("SENTINEL FAILOVER", SERVICE)


def start_sentinels(servers: Servers, *, down_after_ms: int = 1000) -> SentinelSet:
    """A primary, its replica (in sync) and three Sentinels that see both and each other."""
    primary = servers.start()
    replica = servers.start("--replicaof", "127.0.0.1", str(primary.port))
    wait_for(
        "the replica in sync",
        lambda: replica.client().info("replication").get("master_link_status") == "up",
    )
    conf = _SENTINEL_CONF.format(service=SERVICE, primary=primary.port, down_after=down_after_ms)
    sentinels = [servers.start(config=conf, sentinel=True) for _ in range(3)]

    def known() -> bool:
        for s in sentinels:
            c = s.client()
            if len(c.execute_command("SENTINEL REPLICAS", SERVICE)) != 1:
                return False
            if len(c.execute_command("SENTINEL SENTINELS", SERVICE)) != 2:
                return False
        return True

    wait_for("the Sentinels seeing the replica and each other", known)
    return SentinelSet(primary, replica, sentinels)
