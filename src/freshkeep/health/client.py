"""Read the health of a running service over HTTP (used by ``freshkeep health``).

Standard library only (``urllib``): a probe or a cron job needs no extra dependency.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from freshkeep.exceptions import HealthUnreachableError
from freshkeep.health._model import HealthReport


@dataclass(frozen=True, slots=True)
class Fetched:
    """A report read from a service: ``report``, the ``url`` it came from, and whether it is
    the ``detailed`` one (every check) or the headline only."""

    report: HealthReport
    url: str
    detailed: bool
    note: str | None = None
    """Why a detailed report was asked for but the headline is all there is."""


def base_url(url: str) -> str:
    """``url`` without a trailing ``/``, ``/health`` or ``/health/detailed``."""
    url = url.strip().rstrip("/")
    for suffix in ("/health/detailed", "/health"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def fetch(url: str, *, token: str | None = None, timeout: float = 10.0) -> Fetched:
    """The health report of the service at ``url`` (its base URL).

    With ``token``: ``GET /health/detailed`` with ``Authorization: Bearer <token>``; a ``401``
    raises :class:`~freshkeep.exceptions.HealthUnreachableError` (wrong token); a ``404``
    (the endpoint is off on the service) falls back to ``GET /health``, with a note. Without
    a token: ``GET /health``. A service that cannot be reached, or answers something that is
    not a health report, raises :class:`~freshkeep.exceptions.HealthUnreachableError`.
    """
    base = base_url(url)
    if not base.lower().startswith(("http://", "https://")):
        raise HealthUnreachableError(f"not an http(s) URL: {url!r}")
    if token:
        status, body, where = _get(f"{base}/health/detailed", token, timeout)
        if status == 401:
            raise HealthUnreachableError(
                f"{where} refused the admin token (401): check --token / FRESHKEEP_ADMIN_TOKEN"
            )
        if status != 404:
            return Fetched(_report(status, body, where), where, detailed=True)
        note = f"{where} is off on the service (no admin token configured there)"
    else:
        note = None
    status, body, where = _get(f"{base}/health", None, timeout)
    return Fetched(_report(status, body, where), where, detailed=False, note=note)


def _get(url: str, token: str | None, timeout: float) -> tuple[int, bytes, str]:
    headers = {"accept": "application/json", "user-agent": "freshkeep-health"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read(), url
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read(), url
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HealthUnreachableError(f"cannot reach {url}: {reason}") from exc


def _report(status: int, body: bytes, url: str) -> HealthReport:
    if status not in (200, 503):
        raise HealthUnreachableError(f"{url} answered {status}: {body[:200]!r}")
    try:
        return HealthReport.from_dict(json.loads(body))
    except (ValueError, KeyError, TypeError) as exc:
        raise HealthUnreachableError(
            f"{url} answered {status} without a health report: {body[:200]!r}"
        ) from exc
