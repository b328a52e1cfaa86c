"""The health model: levels, the result of one check, and the report of a run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

HeadlineStatus = Literal["ok", "degraded", "unhealthy"]
"""The headline of a report: ``unhealthy`` if any check is an error, ``degraded`` if any is a
warning, else ``ok`` (``info`` never changes the headline)."""


class Level(StrEnum):
    """How bad the finding of one check is, from ``ok`` to ``error``.

    - ``ok``: keeping up.
    - ``info``: worth a look, needs no action now (e.g. one stuck item); never changes the
      headline.
    - ``warning``: derived data is falling behind or served stale because something fails; the
      headline is ``degraded``.
    - ``error``: data cannot be served within its bounds, or a check itself failed; the headline
      is ``unhealthy``.
    """

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def severity(self) -> int:
        """0 for ``ok`` up to 3 for ``error`` (to sort and compare levels)."""
        return _SEVERITY[self]

    @classmethod
    def parse(cls, value: str | Level) -> Level:
        """``value`` as a level; raises ``ValueError`` naming the allowed values."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(x.value for x in cls)
            raise ValueError(f"a health level must be one of {allowed}, not {value!r}") from None


_SEVERITY = {Level.OK: 0, Level.INFO: 1, Level.WARNING: 2, Level.ERROR: 3}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found: its ``name``, ``level``, a one-line ``detail`` an operator can act
    on, and ``data`` (JSON-ready figures: ages in seconds, counts, names)."""

    name: str
    level: Level
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.level, Level):
            object.__setattr__(self, "level", Level.parse(self.level))

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {
            "name": self.name,
            "level": self.level.value,
            "detail": self.detail,
            "data": dict(self.data),
        }


def headline(levels: Iterable[Level]) -> HeadlineStatus:
    """The headline status of checks at ``levels``: ``unhealthy`` if any is ``error``,
    ``degraded`` if any is ``warning``, else ``ok``."""
    worst = max((Level.parse(lv).severity for lv in levels), default=0)
    if worst >= Level.ERROR.severity:
        return "unhealthy"
    if worst >= Level.WARNING.severity:
        return "degraded"
    return "ok"


EXIT_CODES: Mapping[HeadlineStatus, int] = {"ok": 0, "degraded": 1, "unhealthy": 2}
"""The exit status of ``freshkeep health`` per headline."""

HTTP_STATUS: Mapping[HeadlineStatus, int] = {"ok": 200, "degraded": 200, "unhealthy": 503}
"""The HTTP status of ``GET /health`` per headline: load balancers act on ``unhealthy`` only."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The result of one run of every check: the headline ``status``, the ``checks`` (sorted
    by name) and ``generated_at`` (wall-clock seconds)."""

    status: HeadlineStatus
    checks: list[CheckResult]
    generated_at: float

    @classmethod
    def from_checks(cls, checks: Iterable[CheckResult], generated_at: float) -> HealthReport:
        """A report of ``checks`` whose status follows the headline rule (:func:`headline`)."""
        ordered = sorted(checks, key=lambda c: c.name)
        return cls(headline(c.level for c in ordered), ordered, generated_at)

    @property
    def exit_code(self) -> int:
        """0 when ok, 1 when degraded, 2 when unhealthy (for cron jobs and probes)."""
        return EXIT_CODES[self.status]

    @property
    def http_status(self) -> int:
        """200 when ok or degraded, 503 when unhealthy."""
        return HTTP_STATUS[self.status]

    def counts(self) -> dict[str, int]:
        """How many checks are at each level (every level present, zeros included)."""
        out = {lv.value: 0 for lv in Level}
        for c in self.checks:
            out[c.level.value] += 1
        return out

    def get(self, name: str) -> CheckResult | None:
        """The result of the check ``name``, or ``None``."""
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self, *, detailed: bool = True) -> dict[str, Any]:
        """The report as JSON-ready data: ``status``, ``generated_at`` and, when ``detailed``,
        ``counts`` (checks per level) and ``checks``."""
        out: dict[str, Any] = {"status": self.status, "generated_at": self.generated_at}
        if detailed:
            out["counts"] = self.counts()
            out["checks"] = [c.as_dict() for c in self.checks]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        """A report read back from :meth:`as_dict` (e.g. by ``freshkeep health``); a body
        without ``checks`` gives a report with none."""
        checks = [
            CheckResult(
                str(c["name"]), Level.parse(c["level"]), str(c.get("detail", "")), c.get("data", {})
            )
            for c in data.get("checks", [])
        ]
        status = data["status"]
        if status not in EXIT_CODES:
            raise ValueError(f"not a health status: {status!r}")
        return cls(status, checks, float(data.get("generated_at", 0.0)))
