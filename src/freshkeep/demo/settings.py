"""The demo hub's settings: the library's :class:`~freshkeep.settings.Settings` and the hub's
own, read from the same ``FRESHKEEP_*`` environment (the names did not change)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from freshkeep.settings import Settings


class HubSettings(Settings):
    """What ``freshkeep demo`` reads: every library setting, plus the hub's session files and
    the schedule of its processors. Each is overridable by ``FRESHKEEP_<NAME>``."""

    sessions_root: str | None = Field(
        None,
        description="Directory of the hub's uploaded session files (<root>/<user>/*.jsonl). "
        "Unset: '<database file>-sessions' beside a SQLite database, else ./freshkeep-sessions.",
    )
    processing_interval: float = Field(
        60.0,
        ge=0,
        description="Seconds between scheduled runs of each of the hub's processors that has no "
        "interval of its own in processor_intervals (0: not scheduled).",
    )
    processor_intervals: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Processors with an interval of their own, as name=seconds pairs "
        "('usage=300,evidence=0') or a JSON object ('{\"usage\": 300}'); 0: not scheduled. "
        "The others run every processing_interval seconds.",
    )
    processing_retry_backoff: float = Field(
        60.0,
        gt=0,
        description="Seconds before an item whose processing failed is tried again; doubles on "
        "each failure up to processing_max_retry_backoff.",
    )
    processing_max_retry_backoff: float = Field(
        3600.0, gt=0, description="Cap of the doubling retry backoff of failed items."
    )
    processing_history_keep: float = Field(
        30 * 86400.0,
        gt=0,
        description="Seconds the record of a processor run started by hand (the admin route, "
        "`freshkeep process`) is kept; older records are deleted when a new one is written.",
    )

    @field_validator("processor_intervals", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """``name=seconds,...`` or a JSON object, from the environment; a mapping as it is."""
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            import json

            return json.loads(text)
        pairs: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, seconds = part.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"expected name=seconds, not {part!r}")
            pairs[name.strip()] = seconds.strip().removesuffix("s")
        return pairs

    @field_validator("processor_intervals")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        import math

        for name, seconds in value.items():
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(f"the interval of {name!r} must be >= 0 seconds, not {seconds}")
        return value

    max_body_bytes: int = Field(
        1024 * 1024,
        ge=0,
        description="Bytes a request body may have (the JSON API); a larger one is answered "
        "413 before it is read whole.",
    )
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Bytes a session file upload (POST /sessions/...) may have.",
    )

    @classmethod
    def of(cls, settings: Settings | None) -> HubSettings:
        """``settings`` as hub settings: itself when it is one; else the fields it set
        explicitly, over the environment (``None``: the environment alone). A bad value raises
        ``ConfigurationError``."""
        if isinstance(settings, HubSettings):
            return settings
        if settings is None:
            return cls.load()
        from pydantic import ValidationError

        from freshkeep.exceptions import ConfigurationError

        given = {name: getattr(settings, name) for name in settings.model_fields_set}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ConfigurationError(f"invalid FRESHKEEP_* setting: {exc}") from exc


__all__ = ["HubSettings"]
