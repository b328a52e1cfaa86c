"""A bus over PostgreSQL ``LISTEN`` / ``NOTIFY`` (asyncpg): no server besides the database."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson

from freshkeep.buses.base import RemoteBus
from freshkeep.buses.messages import encode
from freshkeep.core.change_wire import CommitChanges
from freshkeep.core.revision import Revision
from freshkeep.exceptions import ConfigurationError, missing_extra

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise missing_extra("postgres", exc.name or "asyncpg") from exc

DEFAULT_CHANNEL = "freshkeep"
"""The default channel, also that of :func:`freshkeep.sql.triggers.install_triggers`."""

MAX_PAYLOAD = 7900
"""Bytes per notification (PostgreSQL's limit is 8000): larger maps are split."""

_DRIVER = re.compile(r"^postgres(?:ql)?\+[\w]+://")


def libpq_dsn(url: str) -> str:
    """``url`` as asyncpg takes it: ``postgresql+asyncpg://...`` becomes ``postgresql://...``."""
    return _DRIVER.sub("postgresql://", url)


class PostgresBus(RemoteBus):
    """Sends revisions with ``pg_notify`` and receives them by ``LISTEN`` on ``channel``.

    ``dsn`` is a ``postgresql://`` URL (a SQLAlchemy ``postgresql+asyncpg://`` URL works
    too); ``connect_kwargs`` go to ``asyncpg.connect``. The bus keeps two connections: one
    listening (``application_name`` ``freshkeep-listen:<channel>``; a ``SELECT 1`` every
    ``ping_interval`` seconds, answered within ``connect_timeout``, detects a dead one) and
    one notifying (``freshkeep-notify:<channel>``), each reconnected when lost. Messages
    larger than :data:`MAX_PAYLOAD` bytes are split into several notifications; a commit's
    changed rows are carried only when the whole message fits in one (else the receivers
    rebuild).
    Notifications of the change-capture triggers (:mod:`freshkeep.sql.triggers`) on
    the same channel are delivered like any other, with the origin ``"trigger"``.

    See :class:`~freshkeep.buses.base.RemoteBus` for the lifecycle and the other options.
    """

    backend = "postgres"

    def __init__(
        self,
        dsn: str,
        channel: str = DEFAULT_CHANNEL,
        *,
        ping_interval: float = 5.0,
        connect_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not dsn.startswith(("postgresql", "postgres")):
            raise ConfigurationError(f"not a PostgreSQL URL: {dsn!r}")
        if not channel or len(channel.encode()) > 63:
            raise ConfigurationError(f"a NOTIFY channel has 1 to 63 bytes, not {channel!r}")
        super().__init__(channel, **options)
        self.dsn = libpq_dsn(dsn)
        self.ping_interval = ping_interval
        self._connect_kwargs = dict(connect_kwargs or {})
        self._notifier: Any = None
        self._notify_lock = asyncio.Lock()
        self.listener_pid: int | None = None
        """The server process id of the listening connection (``pg_stat_activity.pid``)."""

    async def _connect(self, role: str) -> Any:
        kwargs = dict(self._connect_kwargs)
        settings = dict(kwargs.pop("server_settings", None) or {})
        settings.setdefault("application_name", f"freshkeep-{role}:{self.channel}"[:63])
        return await asyncpg.connect(
            self.dsn, server_settings=settings, timeout=self.connect_timeout, **kwargs
        )

    async def _listen(self) -> None:
        conn = await self._connect("listen")
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.channel, self._on_notification)
            self.listener_pid = conn.get_server_pid()
            self._connected()
            while True:
                try:
                    await asyncio.wait_for(lost.wait(), self.ping_interval)
                except TimeoutError:
                    await asyncio.wait_for(conn.execute("SELECT 1"), self.connect_timeout)
                else:
                    raise ConnectionError("the listening connection was closed")
        finally:
            self.listener_pid = None
            conn.terminate()  # no round trip: it may be dead already

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._deliver(payload)

    def _payloads(
        self,
        revisions: Mapping[str, Revision],
        origin: str,
        changes: CommitChanges | None = None,
    ) -> list[bytes]:
        if changes is not None:  # with the changed rows only when they fit one notification
            one = encode(revisions, origin, changes, limit=min(self.max_changes_bytes, MAX_PAYLOAD))
            if len(one) <= MAX_PAYLOAD:
                return [one]
        sent = time.time()
        head = orjson.dumps({"o": origin, "r": {}, "t": sent})
        out: list[bytes] = []
        chunk: dict[str, Revision] = {}
        size = len(head)
        for source, rev in revisions.items():
            item = len(orjson.dumps(source)) + len(orjson.dumps(rev)) + 2  # ':' and ','
            if chunk and size + item > MAX_PAYLOAD:
                out.append(orjson.dumps({"o": origin, "r": chunk, "t": sent}))
                chunk, size = {}, len(head)
            chunk[source] = rev
            size += item
        if chunk:
            out.append(orjson.dumps({"o": origin, "r": chunk, "t": sent}))
        return out

    async def _send(self, payload: bytes) -> None:
        async with self._notify_lock:
            if self._notifier is None or self._notifier.is_closed():
                self._notifier = await self._connect("notify")
            try:
                await self._notifier.execute(
                    "SELECT pg_notify($1, $2)", self.channel, payload.decode()
                )
            except BaseException:
                self._notifier.terminate()
                self._notifier = None
                raise

    async def _close_backend(self) -> None:
        async with self._notify_lock:
            if self._notifier is not None:
                try:
                    await asyncio.wait_for(self._notifier.close(), self.publish_timeout)
                except Exception:
                    self._notifier.terminate()
                self._notifier = None
