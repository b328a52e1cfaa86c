"""A live dashboard page of a keeper: views, remotes, artifacts, processors and health.

:class:`Dashboard` serves two routes (Starlette or FastAPI):

- ``GET /freshkeep``: one HTML page (inline CSS and JavaScript, no external asset) that shows
  the JSON below on first paint (embedded in the page as of its request), then polls it every
  ``poll`` seconds: every view with the revision and age of the entry it serves, its hit
  ratio, its read statuses and last error; every processor with its lag and oldest stuck
  item; remote values (age, TTL, last error); artifact caches; notifiers; and the health
  checks with their levels and the headline status.
- ``GET /freshkeep/status.json``: the same data as JSON (:func:`dashboard_status`).

It exposes internals, so it is protected by the admin token (the hub's
``FRESHKEEP_ADMIN_TOKEN``); without a token both routes answer ``403``. A browser opens
``/freshkeep?token=TOKEN`` once: the token is checked, an ``HttpOnly``, ``SameSite=Strict``
cookie scoped to the dashboard's path is set (it holds an HMAC of the token, never the token
itself), and the browser is redirected to ``/freshkeep`` so the token leaves the address bar
and history. Scripts send ``Authorization: Bearer TOKEN`` instead. Responses are
``Cache-Control: no-store`` and carry a Content-Security-Policy that allows only the page's
own inline script and style and requests to its own origin.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, asdict, dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import SecretStr

from freshkeep.core.auth import bearer_ok
from freshkeep.exceptions import ConfigurationError, missing_extra
from freshkeep.integrations.dashboard_sources import artifact_caches, watched_pipelines
from freshkeep.ports import RemoteBusSnapshot

try:
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse, Response
    from starlette.routing import BaseRoute, Route
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("starlette", exc.name or "starlette") from exc

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache
    from freshkeep.health import Health
    from freshkeep.keeper import Keeper
    from freshkeep.processing import Pipeline, PipelineSnapshot
    from freshkeep.remote import RemoteSnapshot
    from freshkeep.scheduler import Scheduler
    from freshkeep.views import View, ViewSnapshot

COOKIE = "freshkeep_dashboard"
"""The name of the dashboard's session cookie."""

_COOKIE_CONTEXT = b"freshkeep-dashboard-v1"


@cache
def page_template() -> str:
    """The dashboard's HTML (a package resource)."""
    return resources.files("freshkeep.integrations").joinpath("dashboard.html").read_text("utf-8")


@cache
def content_security_policy() -> str:
    """The page's Content-Security-Policy: its own inline script and style (by hash), and
    requests to its own origin; nothing else."""
    html = page_template()

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
            for s in found
        )

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


# -- the status ------------------------------------------------------------------------------


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def view_status(view: View, stats: ViewSnapshot, now: float, mono: float) -> dict[str, Any]:
    """One view's row: its counters, and the entry it serves (for a view read without a key
    and not per principal: the entry of key ``None``)."""
    reads: dict[str, int] = dict(stats.reads)
    total = sum(reads.values())
    entry = None if view.per_principal else view.peek()
    served: dict[str, Any] | None = None
    if entry is not None:
        served = {
            "revision": entry.revision,
            "etag": entry.etag,
            "built_at": entry.built_at,
            "age": max(0.0, now - entry.built_at),
            "unconfirmed_for": max(0.0, mono - entry.confirmed_mono),
            "bytes": entry.size,
            "sections": {
                name: {"built_at": part.built_at, "age": max(0.0, now - part.built_at)}
                for name, part in entry.sections.items()
            },
        }
    failing_since = stats.failing_since
    return {
        "name": view.name,
        "sources": list(view.sources),
        "sections": list(view.sections),
        "policy": asdict(stats.policy),
        "per_principal": view.per_principal,
        "served": served,
        "reads": reads,
        "reads_total": total,
        "hit_ratio": _ratio(reads.get("hit", 0), total),
        "builds": dict(stats.builds),
        "build_seconds": dict(stats.build_seconds),
        "build_errors": stats.build_errors,
        "background_refreshes": stats.background_refreshes,
        "in_flight": stats.in_flight,
        "last_error": stats.last_error,
        "last_error_at": stats.last_error_at,
        "failing_for": None if failing_since is None else max(0.0, now - failing_since),
        "last_build_at": stats.last_build_at,
    }


def remote_status(stats: RemoteSnapshot) -> dict[str, Any]:
    """One remote's row: TTL, counters, and the age and last error of each key's value."""
    values = [{"key": key, **asdict(v)} for key, v in sorted(stats.values.items())]
    return {
        "name": stats.remote,
        "ttl": stats.ttl,
        "max_stale": stats.max_stale,
        "swr": stats.swr,
        "reads": dict(stats.reads),
        "fetches": stats.fetches,
        "fetch_errors": stats.fetch_errors,
        "keys": stats.keys,
        "failing": stats.failing,
        "max_age": stats.max_age,
        "last_error": stats.last_error,
        "last_error_at": stats.last_error_at,
        "values": values[:50],
    }


def processor_status(
    pipeline: PipelineSnapshot,
    name: str,
    checks: Mapping[str, Mapping[str, Any]],
    jobs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """One processor's row: running, its last run, its schedule, and its lag and stuck item
    from the health checks ``processor:<name>`` and ``processor:<name>:stuck`` (if watched)."""
    last = pipeline.last_runs.get(name)
    lag = checks.get(f"processor:{name}")
    stuck = checks.get(f"processor:{name}:stuck")
    lag_data: Mapping[str, Any] = lag["data"] if lag else {}
    stuck_data: Mapping[str, Any] = stuck["data"] if stuck else {}
    run: dict[str, Any] | None = None
    if last is not None:
        run = last.as_dict()
        run["errors"] = dict(list(last.errors.items())[:5])
    return {
        "name": name,
        "running": name in pipeline.running,
        "last_run": run,
        "schedule": jobs.get(name),
        "lag": lag_data.get("lag"),
        "pending": lag_data.get("pending"),
        "items": lag_data.get("items"),
        "lag_level": lag["level"] if lag else None,
        "lag_detail": lag["detail"] if lag else None,
        "stuck_item": stuck_data.get("item"),
        "stuck_age": stuck_data.get("age"),
        "stuck_error": stuck_data.get("error"),
        "stuck_level": stuck["level"] if stuck else None,
    }


def _jobs(schedulers: Iterable[Scheduler]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for scheduler in schedulers:
        mono = scheduler.clock.monotonic()
        for name, job in scheduler.snapshot().items():
            last, due = job.get("last_run"), job.get("next_due")
            out.setdefault(
                name,
                {
                    "every": job.get("every"),
                    "running": job.get("running"),
                    "runs": job.get("runs"),
                    "failures": job.get("failures"),
                    "last_error": job.get("last_error"),
                    "last_duration": job.get("last_duration"),
                    "last_run_ago": None if last is None else max(0.0, mono - last),
                    "next_in": None if due is None else max(0.0, due - mono),
                },
            )
    return out


async def _artifact_status(name: str, cache: ArtifactCache) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name}
    try:
        row["stats"] = cache.snapshot().to_dict()
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


async def dashboard_status(
    keeper: Keeper,
    *,
    pipelines: Iterable[Pipeline] = (),
    schedulers: Iterable[Scheduler] = (),
    health: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the dashboard shows, as JSON-ready data, read from the keeper's snapshot.

    ``pipelines`` (with those registered on the keeper, e.g. by its health registry's
    ``watch_processor``) give the processors; ``schedulers`` their schedule; ``health`` is a
    report (``HealthReport.as_dict()``) whose checks give the processors' lag and stuck item
    and are listed as they are.
    """
    clock = keeper.clock
    now, mono = clock.time(), clock.monotonic()
    snap = keeper.snapshot()
    views = [
        view_status(view, snap.views[name], now, mono)
        for name, view in sorted(keeper.views.items())
        if name in snap.views
    ]
    checks: dict[str, Mapping[str, Any]] = {}
    if health is not None:
        checks = {c["name"]: c for c in health.get("checks", ())}
    jobs = _jobs(schedulers)
    processors: list[dict[str, Any]] = []
    seen: set[str] = set()
    found = list(pipelines)
    found += [p for p in watched_pipelines(keeper) if all(p is not q for q in found)]
    for pipeline in found:
        ps = pipeline.snapshot()
        for name in ps.processors:
            if name not in seen:
                seen.add(name)
                processors.append(processor_status(ps, name, checks, jobs))
    caches = artifact_caches(keeper)
    artifacts = await asyncio.gather(*(_artifact_status(n, c) for n, c in sorted(caches.items())))
    bus = snap.bus
    return {
        "generated_at": now,
        "instance": snap.instance,
        "keeper": {
            "probe": snap.probe,
            "resync_interval": snap.resync_interval,
            "probes": snap.probes,
            "probe_errors": snap.probe_errors,
            "commits": snap.commits,
            "remote_revisions": snap.remote_revisions,
            "bus": {
                "kind": bus.kind,
                "down": snap.bus_down,
                "last_error": bus.last_error if isinstance(bus, RemoteBusSnapshot) else None,
            },
            "store": asdict(snap.store),
            "shared": None if snap.shared is None else snap.shared.to_dict(),
        },
        "views": views,
        "remotes": [remote_status(r) for _, r in sorted(snap.remotes.items())],
        "notifiers": [n.to_dict() for _, n in sorted(snap.notifiers.items())],
        "artifacts": list(artifacts),
        "processors": processors,
        "health": health,
    }


# -- the routes ------------------------------------------------------------------------------


@dataclass(eq=False)
class Dashboard:
    """The dashboard of ``keeper`` at ``path`` (default ``/freshkeep``); see the module
    docstring. ``token``: the admin token, a ``str`` or a ``pydantic.SecretStr`` (as the
    ``admin_token`` setting holds it); ``None`` or empty: the dashboard is off, 403.

    ``pipelines`` and ``schedulers`` give the processors and their schedule; the keeper's
    health registry (``keeper.health``) is run at most every
    ``health_every`` seconds and its report shown. ``poll`` is the page's refresh period.
    """

    keeper: Keeper
    token: str | SecretStr | None = field(repr=False)
    _: KW_ONLY
    pipelines: tuple[Pipeline, ...] = ()
    schedulers: tuple[Scheduler, ...] = ()
    path: str = "/freshkeep"
    poll: float = 1.5
    health_every: float = 5.0
    title: str = "freshkeep"

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.endswith("/") or len(self.path) < 2:
            raise ConfigurationError(
                f"the dashboard path must start with / and not end with it, not {self.path!r}"
            )
        if not self.poll > 0:
            raise ConfigurationError(f"the dashboard poll must be > 0 seconds, not {self.poll!r}")
        token = self.token
        if isinstance(token, SecretStr):
            token = token.get_secret_value()
        if token is not None and not isinstance(token, str):
            raise ConfigurationError(
                f"the dashboard token must be a str or a SecretStr, not {type(token).__name__}"
            )
        self._secret: str | None = token or None
        if self._secret is None:
            self.token = None
        self.pipelines = tuple(self.pipelines)
        self.schedulers = tuple(self.schedulers)
        self._health: tuple[float, dict[str, Any]] | None = None
        self._health_task: asyncio.Task[dict[str, Any] | None] | None = None

    # -- auth ------------------------------------------------------------------------------

    def cookie_value(self) -> str:
        """What the session cookie holds: an HMAC of the token (not the token)."""
        assert self._secret is not None
        return hmac.new(self._secret.encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()

    def _token_ok(self, given: str) -> bool:
        assert self._secret is not None
        return secrets.compare_digest(given.encode(), self._secret.encode())

    def authorized(self, request: Request) -> bool:
        """Whether ``request`` carries the session cookie or the bearer token."""
        if self._secret is None:
            return False
        authorization = request.headers.get("authorization", "")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            return bearer_ok(authorization, self._secret)
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and secrets.compare_digest(
            cookie.encode(), self.cookie_value().encode()
        )

    # -- data ------------------------------------------------------------------------------

    async def health_report(self) -> dict[str, Any] | None:
        """The keeper's health report (``keeper.health``), run at most every
        ``health_every`` seconds; concurrent polls share one run."""
        registry = self.keeper.health
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] < self.health_every:
            return cached[1]
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.ensure_future(self._run_health(registry))
        return await asyncio.shield(self._health_task)

    async def _run_health(self, registry: Health) -> dict[str, Any] | None:
        try:
            report = await registry.run()
            data: dict[str, Any] = report.as_dict()
        except Exception as exc:
            data = {
                "status": "unhealthy",
                "checks": [],
                "error": f"the health checks could not run: {type(exc).__name__}: {exc}",
            }
        self._health = (time.monotonic(), data)
        return data

    async def status(self) -> dict[str, Any]:
        """Everything the page shows (:func:`dashboard_status`)."""
        return await dashboard_status(
            self.keeper,
            pipelines=self.pipelines,
            schedulers=self.schedulers,
            health=await self.health_report(),
        )

    # -- endpoints -------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """The page and its JSON, as Starlette routes (``app.router.routes.extend(...)``)."""
        return [
            Route(self.path, self.page, methods=["GET"], name="freshkeep_dashboard"),
            Route(
                f"{self.path}/status.json",
                self.status_json,
                methods=["GET"],
                name="freshkeep_dashboard_status",
            ),
        ]

    def mount(self, app: Any) -> None:
        """Add :meth:`routes` to a Starlette or FastAPI application."""
        app.router.routes.extend(self.routes())

    def _disabled(self, html: bool) -> Response:
        message = "the dashboard is disabled: set an admin token (FRESHKEEP_ADMIN_TOKEN)"
        return _message(403, message, html=html)

    async def page(self, request: Request) -> Response:
        """``GET /freshkeep``: the page; ``?token=`` exchanges the token for the cookie."""
        if self._secret is None:
            return self._disabled(True)
        given = request.query_params.get("token")
        if given is not None:
            if not self._token_ok(given):
                return _message(401, "that token is not the admin token", html=True)
            response = RedirectResponse(self.path, status_code=303, headers=_SECURITY_HEADERS)
            response.set_cookie(
                COOKIE,
                self.cookie_value(),
                path=self.path,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        if not self.authorized(request):
            return _message(
                401,
                f"open {self.path}?token=<admin token> to sign in (the token is printed by "
                "freshkeep demo, or is the FRESHKEEP_ADMIN_TOKEN setting)",
                html=True,
            )
        try:
            initial = await self.status()
        except Exception:  # the page polls for it: the JSON route answers with the error
            initial = None
        body = (
            page_template()
            .replace("{{TITLE}}", _escape(self.title))
            .replace("{{POLL_MS}}", str(round(self.poll * 1000)))
            .replace("{{INITIAL}}", script_json(initial))
        )
        headers = {**_SECURITY_HEADERS, "Content-Security-Policy": content_security_policy()}
        return HTMLResponse(body, headers=headers)

    async def status_json(self, request: Request) -> Response:
        """``GET /freshkeep/status.json``: :meth:`status` (cookie or bearer token)."""
        if self._secret is None:
            return self._disabled(False)
        if not self.authorized(request):
            return _message(
                401,
                "sign in: open the dashboard with ?token=<admin token>, or send "
                "Authorization: Bearer <admin token>",
                html=False,
            )
        body = orjson.dumps(await self.status(), option=orjson.OPT_NON_STR_KEYS, default=str)
        return Response(body, media_type="application/json", headers=_SECURITY_HEADERS)


def script_json(data: Any) -> str:
    """``data`` as JSON to embed in a ``<script type="application/json">`` element: ``<``,
    ``>`` and ``&`` are escaped (``\\u003c``…), so no value can close the element or open a
    comment; ``JSON.parse`` of the element's text gives ``data`` back."""
    text = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _message(status: int, message: str, *, html: bool) -> Response:
    headers = dict(_SECURITY_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if not html:
        return Response(
            orjson.dumps({"detail": message}),
            status_code=status,
            media_type="application/json",
            headers=headers,
        )
    headers["Content-Security-Policy"] = "default-src 'none'"
    body = (
        "<!doctype html><meta charset=utf-8><title>freshkeep dashboard</title>"
        f"<p>{_escape(message)}</p>"
    )
    return HTMLResponse(body, status_code=status, headers=headers)


__all__ = [
    "COOKIE",
    "Dashboard",
    "content_security_policy",
    "dashboard_status",
    "page_template",
    "processor_status",
    "remote_status",
    "script_json",
    "view_status",
]
