"""The built-in checks: views, remote values, notifiers, the shared store, the bus, artifact
caches and job queues, computed on each run from the keeper's registries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from freshkeep.buses.base import RemoteBus
from freshkeep.health._config import env_name
from freshkeep.health._format import age_text
from freshkeep.health._model import CheckResult, Level
from freshkeep.ports import RemoteBusSnapshot, SharedStoreSnapshot

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.health._registry import Health
    from freshkeep.jobs import JobQueue, QueueComponent
    from freshkeep.keeper import Keeper
    from freshkeep.notify import ChangeNotifier
    from freshkeep.remote import Remote
    from freshkeep.views import View

BuiltinCheck = Callable[[], Awaitable[CheckResult]]


DEFAULT_EXPIRED_AGE = 3600.0
"""Oldest-expired-artifact age that warns when the cache has no ``gc_interval``."""
DEFAULT_BUS_ERROR_AFTER = 300.0
"""Seconds a bus may stay down before it is an error, when the bus has no
``max_reconnect_backoff``."""


def builtin_checks(health: Health) -> list[tuple[str, BuiltinCheck]]:
    """The built-in checks of ``health.keeper`` as they stand now, by name."""
    keeper = health.keeper
    if keeper is None:
        return []
    out: list[tuple[str, BuiltinCheck]] = []
    hits = keeper.store.hits_by_view()  # one pass over the entries for every view
    for name, view in keeper.views.items():
        out.append((f"view:{name}", _bind(_view_check, health, (view, hits.get(name, 0)))))
    for name, remote in keeper.remotes.items():
        out.append((f"remote:{name}", _bind(remote_check, health, remote)))
    for name, notifier in keeper.notifiers.items():
        out.append((f"notifier:{name}", _bind(notifier_check, health, notifier)))
    out.append(("store", _bind(store_check, health, keeper)))
    out.append(("bus", _bind(bus_check, health, keeper)))
    for name, cache in keeper.artifacts.items():
        out.append((f"artifacts:{name}", _bind(artifacts_check, health, (name, cache))))
    watched = health._watched_queues.values()
    for name, queue in keeper.jobs.items():
        if all(queue is not q for q in watched):  # else its watch_jobs check covers it
            check = f"jobs:{name}"
            out.append((check, _bind(jobs_check, health, (check, queue))))
    return out


def _bind(
    fn: Callable[[Health, Any], Awaitable[CheckResult]], health: Health, obj: Any
) -> BuiltinCheck:
    async def check() -> CheckResult:
        return await fn(health, obj)

    return check


# -- views ---------------------------------------------------------------------------------------

STALE_STATUSES = ("stale", "error-stale")


async def _view_check(health: Health, args: tuple[View, int]) -> CheckResult:
    view, store_hits = args
    return await view_check(health, view, store_hits=store_hits)


async def view_check(health: Health, view: View, *, store_hits: int | None = None) -> CheckResult:
    """A view: ``warning`` while its builds fail (it serves error-stale values), ``error`` once
    they have failed for longer than ``FRESHKEEP_HEALTH_VIEWS_ERROR_AFTER`` (default: the
    policy's ``stale_if_error``) and still fail; ``info`` when the share of stale serves since
    the previous run exceeds ``FRESHKEEP_HEALTH_VIEWS_STALE_SHARE``."""
    cfg = health.config
    name = f"view:{view.name}"
    st = view.snapshot(store_hits=store_hits)
    now = health.clock.time()
    reads: dict[str, int] = dict(st.reads)
    prev = health._view_reads.get(view.name, {})
    health._view_reads[view.name] = reads
    window = {k: max(0, v - prev.get(k, 0)) for k, v in reads.items()}
    total = sum(window.values())
    stale = sum(window.get(s, 0) for s in STALE_STATUSES)
    error_stale = window.get("error-stale", 0)
    share = stale / total if total else 0.0
    last_build, last_error_at, failing_since = st.last_build_at, st.last_error_at, st.failing_since
    failing = failing_since is not None
    age = None if last_build is None else max(0.0, now - last_build)
    error_after = cfg.views_error_after
    if error_after is None:
        error_after = st.policy.stale_if_error
    data: dict[str, Any] = {
        "view": view.name,
        "age": age,
        "last_build_at": last_build,
        "last_error": st.last_error,
        "last_error_at": last_error_at,
        "failing_since": failing_since,
        "build_errors": st.build_errors,
        "reads": total,
        "stale": stale,
        "error_stale": error_stale,
        "stale_share": share,
        "stale_share_threshold": cfg.views_stale_share,
        "error_after": error_after,
        "in_flight": st.in_flight,
    }
    served = "never built" if age is None else f"value built {age_text(age)} ago"
    if failing and failing_since is not None:
        down = max(0.0, now - failing_since)
        still = last_error_at is not None and now - last_error_at <= max(error_after, 0.0)
        level = Level.ERROR if down > error_after > 0 and still else Level.WARNING
        detail = (
            f"view {view.name!r}: builds failing for {age_text(down)} "
            f"({st.last_error}); serving error-stale on {error_stale} of {total} "
            f"read(s) since the last check; {served}"
        )
        if level is Level.ERROR:
            detail += (
                f"; failing longer than {age_text(error_after)} "
                f"({env_name('views_error_after')}): readers get errors once no good value "
                "is left"
            )
        return CheckResult(name, level, detail, data)
    if total and share > cfg.views_stale_share:
        return CheckResult(
            name,
            Level.INFO,
            f"view {view.name!r}: {share:.0%} of {total} read(s) served stale since the last "
            f"check (threshold {cfg.views_stale_share:.0%}); {served}",
            data,
        )
    return CheckResult(name, Level.OK, f"view {view.name!r}: {served}", data)


# -- remote values -------------------------------------------------------------------------------


async def remote_check(health: Health, remote: Remote) -> CheckResult:
    """A remote value: ``warning`` when a value is older than its TTL plus
    ``FRESHKEEP_HEALTH_REMOTES_GRACE`` (default: the remote's ``retry_backoff``) because its
    refreshes fail, or a failing key has no value at all; ``error`` when a value is past
    ``max_stale`` (it can no longer be served)."""
    cfg = health.config
    name = f"remote:{remote.name}"
    st = remote.snapshot()
    ttl, max_stale = st.ttl, st.max_stale
    grace = cfg.remotes_grace
    if grace is None:
        grace = remote.config.retry_backoff
    overdue: list[tuple[str, float]] = []
    missing: list[str] = []
    beyond: list[str] = []
    for key, v in st.values.items():
        if not v.failures:
            continue
        if v.age is None:
            missing.append(key)
        elif max_stale is not None and v.age > max_stale:
            beyond.append(key)
        elif ttl > 0 and v.age > ttl + grace:
            overdue.append((key, v.age))
    data: dict[str, Any] = {
        "remote": remote.name,
        "ttl": ttl,
        "grace": grace,
        "max_stale": max_stale,
        "keys": st.keys,
        "failing": st.failing,
        "max_age": st.max_age,
        "overdue": [k for k, _ in overdue],
        "missing": missing,
        "beyond_max_stale": beyond,
        "last_error": st.last_error,
        "last_error_at": st.last_error_at,
        "last_fetch_at": st.last_fetch_at,
    }
    err = st.last_error
    if beyond:
        return CheckResult(
            name,
            Level.ERROR,
            f"remote {remote.name!r}: {len(beyond)} value(s) older than max_stale "
            f"{age_text(float(max_stale or 0))} and refreshes fail ({err}): they cannot be served",
            data,
        )
    if overdue or missing:
        parts = []
        if overdue:
            oldest_key, oldest_age = max(overdue, key=lambda kv: kv[1])
            parts.append(
                f"{len(overdue)} value(s) past their TTL of {age_text(ttl)} "
                f"(oldest {oldest_key!r}, {age_text(oldest_age)} old)"
            )
        if missing:
            parts.append(f"{len(missing)} key(s) never fetched")
        return CheckResult(
            name,
            Level.WARNING,
            f"remote {remote.name!r}: {' and '.join(parts)} because refreshes fail ({err})",
            data,
        )
    age = st.max_age
    detail = f"remote {remote.name!r}: {st.keys} key(s)"
    if age is not None:
        detail += f", oldest value {age_text(age)} old (TTL {age_text(ttl)})"
    return CheckResult(name, Level.OK, detail, data)


# -- notifiers -----------------------------------------------------------------------------------


async def notifier_check(health: Health, notifier: ChangeNotifier) -> CheckResult:
    """A notifier: ``warning`` when its last send failed (after its last success) or confirmed
    states could not be saved."""
    name = f"notifier:{notifier.name}"
    st = notifier.snapshot()
    data: dict[str, Any] = {
        "notifier": st.notifier,
        "sent": st.sent,
        "failed": st.failed,
        "pending": st.pending,
        "store_errors": st.store_errors,
        "unsaved": st.unsaved,
        "last_error": st.last_error,
        "last_error_at": st.last_error_at,
        "last_sent_at": st.last_sent_at,
    }
    last_error_at, last_sent_at = st.last_error_at, st.last_sent_at
    failing = last_error_at is not None and (last_sent_at is None or last_error_at > last_sent_at)
    if st.unsaved:
        return CheckResult(
            name,
            Level.WARNING,
            f"notifier {notifier.name!r}: {st.unsaved} confirmed state(s) not saved "
            f"({st.last_error}): they may be notified again after a restart",
            data,
        )
    if failing and last_error_at is not None:
        ago = age_text(max(0.0, health.clock.time() - last_error_at))
        return CheckResult(
            name,
            Level.WARNING,
            f"notifier {notifier.name!r}: last send failed {ago} ago ({st.last_error})",
            data,
        )
    return CheckResult(name, Level.OK, f"notifier {notifier.name!r}: {st.sent} sent", data)


# -- store and bus -------------------------------------------------------------------------------


async def store_check(health: Health, keeper: Keeper) -> CheckResult:
    """The shared store: ``warning`` while it is unreachable (every instance builds for itself
    meanwhile), and while a put replaced a value the store could not read (forged, tampered,
    signed with another secret) less than ``FRESHKEEP_HEALTH_STORE_POISONED_WINDOW`` seconds
    ago; the in-process store alone is always ``ok``."""
    m = keeper.store.snapshot()
    memory = {"entries": m.entries, "bytes": m.bytes, "evictions": m.evictions}
    if keeper.shared is None:
        return CheckResult(
            "store",
            Level.OK,
            f"in-process store only ({m.entries} entries)",
            {"shared": None, "memory": memory},
        )
    shared = keeper.shared.snapshot()
    kind = type(keeper.shared).__name__
    window = health.config.store_poisoned_window
    data = {
        "shared": True,
        "kind": kind,
        "reachable": shared.reachable,
        "outage_seconds": shared.outage_seconds,
        "outages": shared.outages,
        "last_error": shared.last_error,
        "last_error_at": shared.last_error_at,
        "poisoned": shared.poisoned,
        "last_poisoned": shared.last_poisoned,
        "last_poisoned_at": shared.last_poisoned_at,
        "poisoned_window": window,
        "memory": memory,
    }
    poisoned = _poisoned_text(health, shared)
    if not shared.reachable:
        outage = shared.outage_seconds
        lasting = f" for {age_text(outage)}" if outage is not None else ""
        detail = (
            f"shared store {kind} unreachable{lasting} ({shared.last_error}); "
            "each instance builds for itself meanwhile"
        )
        if poisoned:
            detail += f"; {poisoned}"
        return CheckResult("store", Level.WARNING, detail, data)
    if poisoned:
        return CheckResult("store", Level.WARNING, f"shared store {kind}: {poisoned}", data)
    detail = f"shared store {kind} reachable"
    if shared.outages:
        detail += f" ({shared.outages} outage(s) so far, last error: {shared.last_error})"
    if shared.poisoned:
        detail += f" ({shared.poisoned} unreadable value(s) replaced so far)"
    return CheckResult("store", Level.OK, detail, data)


def _poisoned_text(health: Health, shared: SharedStoreSnapshot) -> str | None:
    """What to warn about values the shared store could not read, if the last one was
    replaced within the window."""
    at = shared.last_poisoned_at
    if not shared.poisoned or at is None:
        return None
    ago = max(0.0, health.clock.time() - at)
    if ago > health.config.store_poisoned_window:
        return None
    return (
        f"{shared.poisoned} value(s) it could not read were replaced, the last "
        f"{age_text(ago)} ago ({shared.last_poisoned}): something other than this "
        "deployment's instances writes to it, or they do not share one store secret "
        f"({env_name('store_poisoned_window')})"
    )


async def bus_check(health: Health, keeper: Keeper) -> CheckResult:
    """The bus: ``warning`` while a network bus is down (reads probe revisions meanwhile),
    ``error`` once it has been down longer than ``FRESHKEEP_HEALTH_BUSES_ERROR_AFTER`` (default
    10 x its ``max_reconnect_backoff``), or at once when the keeper has no revision source to
    probe (other instances' writes are not seen)."""
    bus = keeper.bus.snapshot()
    if not isinstance(bus, RemoteBusSnapshot):
        return CheckResult("bus", Level.OK, "in-process bus", {"kind": bus.kind})
    cfg = health.config
    error_after = cfg.buses_error_after
    if error_after is None:
        backoff = keeper.bus.max_reconnect_backoff if isinstance(keeper.bus, RemoteBus) else 0
        error_after = 10 * backoff if backoff else DEFAULT_BUS_ERROR_AFTER
    now = health.clock.time()
    started, ended = bus.last_outage_started_at, bus.last_outage_ended_at
    down = keeper.bus_down or not bus.connected
    down_for = max(0.0, now - started) if down and started is not None else None
    data = {
        "kind": bus.kind,
        "channel": bus.channel,
        "connected": bus.connected,
        "down": down,
        "down_for": down_for,
        "reconnects": bus.reconnects,
        "last_error": bus.last_error,
        "last_outage_started_at": started,
        "last_outage_ended_at": ended,
        "error_after": error_after,
        "probing": keeper.revisions is not None,
    }
    label = f"{bus.kind} bus {bus.channel!r}"
    if down:
        lasting = f" for {age_text(down_for)}" if down_for is not None else ""
        if keeper.revisions is None:
            return CheckResult(
                "bus",
                Level.ERROR,
                f"{label} down{lasting} ({bus.last_error}), reconnecting; no revision "
                "source to probe, so other instances' writes are not seen",
                data,
            )
        level = Level.ERROR if down_for is not None and down_for > error_after else Level.WARNING
        detail = (
            f"{label} down{lasting} ({bus.last_error}), reconnecting; reads probe "
            "revisions meanwhile"
        )
        if level is Level.ERROR:
            detail += (
                f"; down longer than {age_text(error_after)} ({env_name('buses_error_after')})"
            )
        return CheckResult("bus", level, detail, data)
    detail = f"{label} connected"
    if ended is not None:
        detail += f" (last outage ended {age_text(max(0.0, now - ended))} ago)"
    return CheckResult("bus", Level.OK, detail, data)


# -- artifacts -----------------------------------------------------------------------------------


async def artifacts_check(health: Health, named: tuple[str, ArtifactCache]) -> CheckResult:
    """An artifact cache: ``warning`` when keys fail to prebuild, the prebuild backlog or the
    GC backlog is above its threshold, or the oldest expired artifact waits for GC too long."""
    cache_name, cache = named
    name = f"artifacts:{cache_name}"
    cfg = health.config
    raw = await cache.health_data()
    prebuild, gc, oldest, failing = (
        raw.prebuild_backlog,
        raw.gc_backlog,
        raw.oldest_expired_age,
        raw.failing_keys,
    )
    expired_limit = cfg.artifacts_expired_age
    if expired_limit is None:
        gc_interval = cache.gc_interval
        expired_limit = (
            2 * gc_interval if gc_interval is not None and gc_interval > 0 else DEFAULT_EXPIRED_AGE
        )
    data = {
        "cache": cache_name,
        "prebuild_backlog": prebuild,
        "gc_backlog": gc,
        "oldest_expired_age": oldest,
        "failing_keys": failing,
        "last_error": raw.last_error,
        "prebuild_backlog_threshold": cfg.artifacts_prebuild_backlog,
        "gc_backlog_threshold": cfg.artifacts_gc_backlog,
        "expired_age_threshold": expired_limit,
    }
    problems = []
    if failing:
        problems.append(f"{failing} key(s) failing to build ({raw.last_error})")
    if prebuild > cfg.artifacts_prebuild_backlog:
        problems.append(
            f"prebuild backlog {prebuild} > {cfg.artifacts_prebuild_backlog:g} "
            f"({env_name('artifacts_prebuild_backlog')})"
        )
    if gc > cfg.artifacts_gc_backlog:
        problems.append(
            f"GC backlog {gc} > {cfg.artifacts_gc_backlog:g} ({env_name('artifacts_gc_backlog')})"
        )
    if oldest is not None and oldest > expired_limit:
        problems.append(
            f"oldest expired artifact waits for GC for {age_text(oldest)} "
            f"(> {age_text(expired_limit)}, {env_name('artifacts_expired_age')})"
        )
    if problems:
        return CheckResult(
            name, Level.WARNING, f"artifacts {cache_name!r}: " + "; ".join(problems), data
        )
    return CheckResult(
        name,
        Level.OK,
        f"artifacts {cache_name!r}: prebuild backlog {prebuild}, GC backlog {gc}",
        data,
    )


# -- job queues ----------------------------------------------------------------------------------


async def jobs_check(health: Health, named: tuple[str, JobQueue | QueueComponent]) -> CheckResult:
    """A job queue (:meth:`Health.watch_jobs`, or ``jobs:<name>`` of a queue registered on the
    keeper): ``warning`` while a job failed for good (all its
    retries spent: what it derives is not built) less than ``FRESHKEEP_HEALTH_JOBS_FAILED_WINDOW``
    seconds ago, naming the task and its error; ``ok`` otherwise, with the queue's counters."""
    name, queue = named
    st = queue.snapshot()
    window = health.config.jobs_failed_window
    data: dict[str, Any] = {
        "backend": st.backend,
        "queued": st.queued,
        "running": st.running,
        "done": st.done,
        "failed": st.failed,
        "retried": st.retried,
        "stalled": st.stalled,
        "last_failed": st.last_failed,
        "last_failed_at": st.last_failed_at,
        "failed_window": window,
    }
    failed_at = st.last_failed_at
    if failed_at is not None:
        ago = max(0.0, health.clock.time() - failed_at)
        if ago <= window:
            return CheckResult(
                name,
                Level.WARNING,
                f"job queue: {st.failed} job(s) failed after all their retries, the "
                f"last {age_text(ago)} ago: {st.last_failed} (re-run it once the cause "
                f"is fixed; {env_name('jobs_failed_window')})",
                data,
            )
    return CheckResult(
        name,
        Level.OK,
        f"job queue: {st.queued} queued, {st.running} running, {st.done} done, {st.failed} failed",
        data,
    )
