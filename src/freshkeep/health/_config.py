"""The thresholds of the built-in checks and their ``FRESHKEEP_HEALTH_*`` overrides."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from freshkeep.exceptions import ConfigurationError

ENV_PREFIX = "FRESHKEEP_HEALTH_"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Overrides of the built-in checks' thresholds (seconds unless stated). ``None`` means
    the default, derived from the thing each check watches.

    Each field is read from ``FRESHKEEP_HEALTH_<FIELD>`` (upper-cased), e.g.
    ``FRESHKEEP_HEALTH_STUCK_THRESHOLD=60``.
    """

    check_timeout: float = 5.0
    """Seconds one check may take; then it is an ``error`` (the others still run)."""
    lag_grace: float | None = None
    """How long a changed item may wait for its processor before the lag check warns.
    Default: 2 x the processor's cadence."""
    stuck_threshold: float | None = None
    """Age of the oldest unprocessed item above which the stuck-item check reports it
    (``info``). Default: 4 x the processor's lag grace."""
    views_stale_share: float = 0.5
    """Share (0 to 1) of a view's reads served ``stale`` or ``error-stale`` since the previous run
    above which the view check reports it (``info``)."""
    views_error_after: float | None = None
    """Seconds a view's builds may keep failing before its check is an ``error`` (readers get
    errors once no good value within bounds is left). Default: the view's ``stale_if_error``."""
    remotes_grace: float | None = None
    """Seconds beyond its TTL a remote value may be served while its refreshes fail before the
    remote check warns. Default: the remote's ``retry_backoff``."""
    buses_error_after: float | None = None
    """Seconds a network bus may stay down before its check is an ``error`` (a warning until
    then: reads probe revisions meanwhile). Default: 10 x the bus's ``max_reconnect_backoff``
    (300 s with the default settings)."""
    artifacts_prebuild_backlog: float = 100
    """Prebuild jobs waiting in an artifact cache above which its check warns."""
    artifacts_gc_backlog: float = 1000
    """Expired artifacts waiting for garbage collection above which its check warns."""
    jobs_failed_window: float = 3600.0
    """Seconds a job that failed for good (after all its retries) keeps the ``jobs`` check of
    :meth:`Health.watch_jobs` at ``warning``."""
    store_poisoned_window: float = 3600.0
    """Seconds after a put replaced a value the shared store could not read (forged, tampered,
    signed with another secret) that the ``store`` check stays at ``warning``."""
    artifacts_expired_age: float | None = None
    """Age (seconds since expiry) of the oldest expired artifact not yet collected above which
    its check warns. Default: 2 x the cache's ``gc_interval`` if it has one, else 3600 s."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HealthConfig:
        """The config from ``FRESHKEEP_HEALTH_*`` variables of ``environ`` (default:
        ``os.environ``). An unknown ``FRESHKEEP_HEALTH_*`` name or a value that is not a
        finite number >= 0 (a share between 0 and 1) raises
        :class:`~freshkeep.exceptions.ConfigurationError` naming the variable."""
        env = os.environ if environ is None else environ
        known = {env_name(f.name): f.name for f in fields(cls)}
        settings = _settings_vars()
        values: dict[str, float] = {}
        for var in sorted(env):
            if not var.upper().startswith(ENV_PREFIX) or var.upper() in settings:
                continue
            field_name = known.get(var.upper())
            if field_name is None:
                raise ConfigurationError(
                    f"unknown health setting {var} (known: {', '.join(sorted(known))})"
                )
            values[field_name] = _number(var, env[var], share=field_name.endswith("_share"))
        if values.get("check_timeout", 1.0) <= 0:
            raise ConfigurationError(
                f"{env_name('check_timeout')} must be > 0, not {env[env_name('check_timeout')]!r}"
            )
        return cls(**values)


def env_name(field_name: str) -> str:
    """The environment variable of a :class:`HealthConfig` field."""
    return ENV_PREFIX + field_name.upper()


def env_names() -> list[str]:
    """Every ``FRESHKEEP_HEALTH_*`` variable, sorted."""
    return sorted(env_name(f.name) for f in fields(HealthConfig))


def _settings_vars() -> frozenset[str]:
    """``FRESHKEEP_HEALTH_*`` names of :class:`~freshkeep.settings.Settings` fields (a setting
    whose name starts with ``health_``): they belong to the settings, not to this config."""
    from freshkeep.settings import Settings

    return frozenset(
        f"FRESHKEEP_{name.upper()}" for name in Settings.model_fields if name.startswith("health_")
    )


def _number(var: str, raw: str, *, share: bool) -> float:
    try:
        value = float(raw.strip() if share else raw.strip().removesuffix("s"))
    except ValueError:
        what = "a number between 0 and 1" if share else "a number of seconds"
        raise ConfigurationError(f"{var} must be {what}, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{var} must be a finite number >= 0, not {raw!r}")
    if share and value > 1:
        raise ConfigurationError(f"{var} is a share: it must be between 0 and 1, not {raw!r}")
    return value
