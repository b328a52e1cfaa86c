"""The settings of one remote, from code and from ``FRESHKEEP_REMOTE_<NAME>_*``."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from freshkeep.exceptions import ConfigurationError


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """How one remote keeps its values.

    - ``ttl``: seconds a fetched value is served without fetching again; ``0`` keeps it for
      the process lifetime (until ``reload``).
    - ``max_stale``: seconds since its fetch a value may still be served when fetches fail
      (and by stale-while-revalidate); ``None`` (the default): no bound, a fetched value is
      never replaced by the fallback.
    - ``swr``: serve an expired value at once and fetch in the background (single-flight).
    - ``retry_backoff`` / ``max_retry_backoff``: seconds before a failed key is fetched again,
      doubling per consecutive failure up to the cap.
    """

    ttl: float
    max_stale: float | None = None
    swr: bool = False
    retry_backoff: float = 1.0
    max_retry_backoff: float = 30.0

    def __post_init__(self) -> None:
        for name in ("ttl", "retry_backoff", "max_retry_backoff", "max_stale"):
            value = getattr(self, name)
            if value is None and name == "max_stale":
                continue
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigurationError(f"{name} must be a finite number >= 0, not {value!r}")
        if self.retry_backoff <= 0 or self.max_retry_backoff <= 0:
            raise ConfigurationError("retry_backoff and max_retry_backoff must be > 0")


def env_prefix(name: str) -> str:
    """``FRESHKEEP_REMOTE_<NAME>_``: the name upper-cased, every other character ``_``."""
    return "FRESHKEEP_REMOTE_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def from_env(
    name: str, config: RemoteConfig, environ: Mapping[str, str] | None = None
) -> RemoteConfig:
    """``config`` with the overrides found in the environment.

    ``FRESHKEEP_REMOTE_<NAME>_TTL_S``, ``_MAX_STALE_S`` (``none`` for no bound),
    ``_RETRY_BACKOFF_S``, ``_MAX_RETRY_BACKOFF_S`` and ``_SWR`` (``true``/``false``). A value
    that cannot be used raises ``ConfigurationError`` naming the variable.
    """
    env = os.environ if environ is None else environ
    prefix = env_prefix(name)
    values: dict[str, object] = {
        "ttl": config.ttl,
        "max_stale": config.max_stale,
        "swr": config.swr,
        "retry_backoff": config.retry_backoff,
        "max_retry_backoff": config.max_retry_backoff,
    }
    for field, suffix in (
        ("ttl", "TTL_S"),
        ("max_stale", "MAX_STALE_S"),
        ("retry_backoff", "RETRY_BACKOFF_S"),
        ("max_retry_backoff", "MAX_RETRY_BACKOFF_S"),
    ):
        raw = env.get(prefix + suffix)
        if raw is None:
            continue
        if field == "max_stale" and raw.strip().lower() in ("", "none"):
            values[field] = None
            continue
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise ConfigurationError(f"{prefix}{suffix}={raw!r}: expected a number of seconds >= 0")
        values[field] = number
    raw = env.get(prefix + "SWR")
    if raw is not None:
        flag = raw.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigurationError(f"{prefix}SWR={raw!r}: expected true or false")
        values["swr"] = flag in _TRUE
    try:
        return RemoteConfig(**values)  # type: ignore[arg-type]
    except ConfigurationError as exc:
        raise ConfigurationError(f"remote {name!r} (after {prefix}* overrides): {exc}") from exc
