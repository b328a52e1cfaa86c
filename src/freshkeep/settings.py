"""Settings read from the environment (prefix ``FRESHKEEP_``), validated at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every bound and threshold of freshkeep; each is overridable by ``FRESHKEEP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FRESHKEEP_", extra="ignore")

    database_url: str = Field(
        "sqlite+aiosqlite:///freshkeep-demo.db",
        description="SQLAlchemy URL of the database (revision counters, and the hub's data).",
    )
    probe: Literal["always", "interval"] | None = Field(
        None,
        description="How revisions are learned: 'always' reads them on every read; 'interval' "
        "trusts pushed revisions and re-reads them every resync_interval. Unset: 'interval' "
        "once write hooks are installed, else 'always'.",
    )
    resync_interval: float = Field(
        1.0, gt=0, description="Seconds between re-reads of revisions in 'interval' mode."
    )
    stale_if_error: float = Field(
        300.0, ge=0, description="Default seconds an entry may be served after a failed build."
    )
    retry_backoff: float = Field(
        1.0, gt=0, description="Seconds before a failed background refresh is tried again."
    )
    max_retry_backoff: float = Field(
        30.0, gt=0, description="Cap of the doubling retry backoff of background refreshes."
    )
    memory_max_entries: int = Field(10_000, ge=1, description="Entries kept in memory (LRU).")
    memory_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="Bytes of entries kept in memory (LRU)."
    )
    header_cache: str = Field("X-Freshkeep-Cache", description="Header carrying the status.")
    header_revision: str = Field(
        "X-Freshkeep-Revision", description="Header carrying the revision vector."
    )
    header_min_revision: str = Field(
        "X-Freshkeep-Min-Revision",
        description="Request header carrying a causal token: the read is never older than it.",
    )
    cache_status_name: str = Field(
        "freshkeep", description="Cache name in the RFC 9211 Cache-Status header."
    )

    @classmethod
    def load(cls) -> Settings:
        """Read the settings from the environment; a bad value raises ``ConfigurationError``."""
        from pydantic import ValidationError

        from freshkeep.exceptions import ConfigurationError

        try:
            return cls()
        except ValidationError as exc:
            raise ConfigurationError(f"invalid FRESHKEEP_* setting: {exc}") from exc
