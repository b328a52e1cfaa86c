"""What the buses between processes share: the reconnect loop, the thread-safe
``publish_nowait``, delivery and the status counters.

Messages are JSON (:mod:`freshkeep.buses.messages`); a malformed one is logged and counted,
never raised.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from freshkeep.buses.messages import MAX_CHANGES_BYTES, BusStats, decode_full, encode
from freshkeep.core.backoff import Backoff
from freshkeep.core.change_wire import CommitChanges
from freshkeep.core.component import Kind
from freshkeep.core.revision import Revision
from freshkeep.ports import Bus, ChangesListener, ConnectCallback, Listener, RemoteBusSnapshot

log = logging.getLogger("freshkeep.bus")


class RemoteBus(Bus):
    """The base of the buses between processes; subclasses connect, listen and send.

    Lifecycle: ``await bus.start()`` subscribes (and keeps re-subscribing, with a doubling
    backoff, after any loss of the connection); ``await bus.aclose()`` stops. Callbacks given to
    :meth:`on_connect` run after every successful (re)subscribe: wire ``keeper.resync`` to it,
    so that revisions published during an outage (pub/sub is at-most-once) are read again.
    Publishing never raises: a failure is logged and counted in :meth:`snapshot`.

    :meth:`publish_commit` sends a commit's known changed rows with its revisions, when they
    fit in ``max_changes_bytes`` (and can be carried exactly); the receivers' :meth:`on_changes`
    listeners get them before the revisions are delivered. A message without them (too large,
    a trigger's, an older publisher's) is a gap to the receivers' delta sections: a rebuild.
    """

    kind: ClassVar[Kind] = "bus"
    backend: ClassVar[str] = "remote"
    """What carries the messages (``redis``, ``postgres``): the ``kind`` of its snapshot."""

    def __init__(
        self,
        channel: str,
        *,
        reconnect_backoff: float = 0.5,
        max_reconnect_backoff: float = 30.0,
        publish_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        max_pending: int = 10_000,
        max_changes_bytes: int = MAX_CHANGES_BYTES,
    ) -> None:
        self.name = self.backend
        self.channel = channel
        self.reconnect_backoff = reconnect_backoff
        self.max_reconnect_backoff = max_reconnect_backoff
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.stats = BusStats()
        self._max_pending = max_pending
        self.max_changes_bytes = max_changes_bytes
        """The largest message that carries a commit's changed rows (past it, none)."""
        self._listeners: list[Listener] = []
        self._change_listeners: list[ChangesListener] = []
        self._callbacks: list[ConnectCallback] = []
        self._down_callbacks: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[bytes] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()
        self._up = asyncio.Event()
        self._outage = False

    # -- subclasses ------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Connect, subscribe, call :meth:`_connected`, then deliver until the connection is
        lost (raise) or the bus closes (cancelled). Close the connection on the way out."""
        raise NotImplementedError

    async def _send(self, payload: bytes) -> None:
        """Send one message."""
        raise NotImplementedError

    async def _close_backend(self) -> None:
        """Close the publishing side's connections (and clients the bus created)."""

    def _payloads(
        self,
        revisions: Mapping[str, Revision],
        origin: str,
        changes: CommitChanges | None = None,
    ) -> list[bytes]:
        return [encode(revisions, origin, changes, limit=self.max_changes_bytes)]

    # -- the Bus protocol ------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; return a function that unsubscribes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def publish(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Send ``revisions`` to every subscribed process (this one included); never raises."""
        await self._publish(revisions, origin, None)

    async def publish_commit(
        self, revisions: Mapping[str, Revision], changes: CommitChanges, *, origin: str = ""
    ) -> None:
        """:meth:`publish` with the commit's known changed rows (when they fit)."""
        await self._publish(revisions, origin, changes)

    async def _publish(
        self, revisions: Mapping[str, Revision], origin: str, changes: CommitChanges | None
    ) -> None:
        if revisions:
            try:
                payloads = self._payloads(revisions, origin, changes)
            except Exception as exc:  # revisions that cannot be encoded
                self._error(exc, "publish failed")
                return
            for payload in payloads:
                await self._send_counted(payload)

    def publish_nowait(self, revisions: Mapping[str, Revision], *, origin: str = "") -> None:
        """Schedule a publish from synchronous code in any thread; never blocks or raises.

        Dropped (and counted) when the bus is not started or too many are pending.
        """
        self._publish_nowait(revisions, origin, None)

    def publish_commit_nowait(
        self, revisions: Mapping[str, Revision], changes: CommitChanges, *, origin: str = ""
    ) -> None:
        """:meth:`publish_nowait` with the commit's known changed rows (when they fit)."""
        self._publish_nowait(revisions, origin, changes)

    def _publish_nowait(
        self, revisions: Mapping[str, Revision], origin: str, changes: CommitChanges | None
    ) -> None:
        if not revisions:
            return
        loop, queue = self._loop, self._queue
        if loop is None or queue is None or self._closing.is_set():
            self.stats.dropped += 1
            return
        try:
            payloads = self._payloads(revisions, origin, changes)
            loop.call_soon_threadsafe(self._enqueue, queue, payloads)
        except Exception as exc:  # a closed loop, or revisions that cannot be encoded
            self.stats.dropped += 1
            self._error(exc, "publish_nowait failed")

    def on_changes(self, listener: ChangesListener) -> Callable[[], None]:
        """Call ``listener`` with the changed rows of each message that carries them, before
        the revisions are delivered; return a remover."""
        self._change_listeners.append(listener)

        def remove() -> None:
            if listener in self._change_listeners:
                self._change_listeners.remove(listener)

        return remove

    def on_connect(self, callback: ConnectCallback) -> Callable[[], None]:
        """Call ``callback`` after every successful (re)subscribe; return a remover."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def on_disconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (synchronously) when an outage starts; return a remover. While
        the bus is down no revision is pushed, so a keeper reads them on every read."""
        self._down_callbacks.append(callback)

        def remove() -> None:
            if callback in self._down_callbacks:
                self._down_callbacks.remove(callback)

        return remove

    def snapshot(self) -> RemoteBusSnapshot:
        """State and counters: ``connected``, ``reconnects``, ``last_error``,
        ``last_outage_started_at`` / ``last_outage_ended_at`` (wall-clock seconds; ended is
        ``None`` while an outage lasts), ``published``, ``received``, ``errors``,
        ``malformed``, ``dropped``..."""
        s = self.stats
        return RemoteBusSnapshot(
            name=self.name,
            kind=self.backend,
            channel=self.channel,
            started=self._loop is not None,
            connected=s.connected,
            connects=s.connects,
            reconnects=s.reconnects,
            published=s.published,
            received=s.received,
            errors=s.errors,
            malformed=s.malformed,
            dropped=s.dropped,
            last_error=s.last_error,
            last_error_at=s.last_error_at,
            last_outage_started_at=s.last_outage_started_at,
            last_outage_ended_at=s.last_outage_ended_at,
            last_delivery_ms=None if s.last_delivery_s is None else s.last_delivery_s * 1000,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> bool:
        """Start listening; wait up to ``timeout`` (default ``connect_timeout``) seconds for
        the first subscribe. Returns whether it is connected; if not, it keeps trying."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._closing.clear()
            self._queue = asyncio.Queue(self._max_pending)
            self._spawn(self._run(), f"freshkeep-{self.backend}-bus-listen")
            self._spawn(self._drain(self._queue), f"freshkeep-{self.backend}-bus-send")
        wait = self.connect_timeout if timeout is None else timeout
        if self._up.is_set() or wait <= 0:
            return self.stats.connected
        try:
            await asyncio.wait_for(self._up.wait(), wait)
        except TimeoutError:
            log.warning(
                "%s bus %r: not connected after %ss; retrying", self.backend, self.channel, wait
            )
        return self.stats.connected

    async def aclose(self) -> None:
        """Stop listening, send what is pending (within ``publish_timeout``), close."""
        self._closing.set()  # publish_nowait drops from now on
        queue = self._queue
        if queue is not None:
            await asyncio.sleep(0)  # let publish_nowait calls scheduled already enqueue
            try:
                await asyncio.wait_for(queue.join(), self.publish_timeout)
            except TimeoutError:
                self.stats.dropped += queue.qsize()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = self._queue = None
        self.stats.connected = False
        self._up.clear()
        await self._close_backend()

    async def __aenter__(self) -> RemoteBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        delays = Backoff(self.reconnect_backoff, self.max_reconnect_backoff, jitter=0.5)
        while not self._closing.is_set():
            error: Exception | None = None
            try:
                await self._listen()
            except Exception as exc:
                error = exc
            if self._closing.is_set():
                return
            if self.stats.connected:
                delays.reset()  # it was up: retry soon
            self._disconnected(error)
            try:
                await asyncio.wait_for(self._closing.wait(), delays.next())
            except TimeoutError:
                pass

    def _connected(self) -> None:
        """Record a successful (re)subscribe and call the ``on_connect`` callbacks."""
        s = self.stats
        if s.connected:  # the driver reconnected by itself: a zero-length outage
            self._disconnected(None)
        s.connected = True
        s.connects += 1
        if s.connects > 1:
            s.reconnects += 1
        if self._outage:
            self._outage = False
            s.last_outage_ended_at = time.time()
        self._up.set()
        log.info("%s bus %r: subscribed", self.backend, self.channel)
        for callback in tuple(self._callbacks):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    self._spawn(self._await_callback(result), "freshkeep-bus-on-connect")
            except Exception as exc:
                self._error(exc, "an on_connect callback failed")

    async def _await_callback(self, result: Awaitable[Any]) -> None:
        try:
            await result
        except Exception as exc:
            self._error(exc, "an on_connect callback failed")

    def _disconnected(self, error: Exception | None) -> None:
        s = self.stats
        if error is not None:
            self._error(error, "connection lost" if s.connected else "cannot connect")
        s.connected = False
        self._up.clear()
        if not self._outage:
            self._outage = True
            s.last_outage_started_at = time.time()
            s.last_outage_ended_at = None
            for callback in tuple(self._down_callbacks):
                try:
                    callback()
                except Exception as exc:
                    self._error(exc, "an on_disconnect callback failed")

    def _error(self, exc: BaseException, what: str) -> None:
        s = self.stats
        s.errors += 1
        s.last_error = f"{type(exc).__name__}: {exc}"
        s.last_error_at = time.time()
        log.warning("%s bus %r: %s: %s", self.backend, self.channel, what, s.last_error)

    def _deliver(self, payload: bytes | str) -> None:
        """Decode one message and call every listener (on the event loop's thread)."""
        try:
            revisions, origin, sent, changes = decode_full(payload)
        except ValueError as exc:
            self.stats.malformed += 1
            self._error(exc, f"malformed message {payload[:200]!r}")
            return
        self.stats.received += 1
        if sent is not None:
            self.stats.last_delivery_s = time.time() - sent
        if not revisions:
            return
        if changes is not None:
            for on_changes in tuple(self._change_listeners):
                try:
                    on_changes(revisions, origin, changes)
                except Exception as exc:
                    self._error(exc, f"changes listener {on_changes!r} failed")
        for listener in tuple(self._listeners):
            try:
                listener(revisions, origin)
            except Exception as exc:
                self._error(exc, f"listener {listener!r} failed")

    async def _send_counted(self, payload: bytes) -> None:
        try:
            await asyncio.wait_for(self._send(payload), self.publish_timeout)
        except Exception as exc:
            self._error(exc, "publish failed")
        else:
            self.stats.published += 1

    def _enqueue(self, queue: asyncio.Queue[bytes], payloads: list[bytes]) -> None:
        if queue is not self._queue:  # scheduled before aclose() finished: never sent
            self.stats.dropped += len(payloads)
            return
        for payload in payloads:
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self.stats.dropped += 1

    async def _drain(self, queue: asyncio.Queue[bytes]) -> None:
        while True:
            payload = await queue.get()
            try:
                await self._send_counted(payload)
            finally:
                queue.task_done()
