"""The demo hub's settings: the library's :class:`~freshkeep.settings.Settings` and the hub's
own, read from the same ``FRESHKEEP_*`` environment (the names did not change)."""

from __future__ import annotations

from pydantic import Field

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
        description="Seconds between scheduled runs of the hub's processors (0: not scheduled).",
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
