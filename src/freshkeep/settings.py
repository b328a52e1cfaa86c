"""Settings read from the environment (prefix ``FRESHKEEP_``), validated at start-up.

These are the library's. The demo hub adds its own (session files, its processors' schedule)
in :class:`freshkeep.demo.settings.HubSettings`, a subclass read from the same environment.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every bound and threshold of freshkeep; each is overridable by ``FRESHKEEP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FRESHKEEP_", extra="ignore")

    database_url: str = Field(
        "sqlite+aiosqlite:///freshkeep-demo.db",
        description="SQLAlchemy URL of the database (revision counters, and the hub's data).",
    )
    store_url: str = Field(
        "memory://",
        description="Where entries are shared between instances: memory:// (none: each "
        "process's own LRU store only) or redis://… / rediss://… (a shared L2 store); "
        "redis+cluster://host:port[,host:port…] (a Redis Cluster) or "
        "redis+sentinel://host:port[,host:port…]/service[/db] (a primary watched by Sentinel).",
    )
    store_prefix: str = Field(
        "freshkeep:", description="Prefix of every key of the shared store (redis:// store_url)."
    )
    store_secret: SecretStr | None = Field(
        None,
        description="HMAC key signing the shared store's entries; when set, unsigned or "
        "tampered entries are misses. Use the same secret in every instance.",
    )
    store_ttl: float = Field(
        3600.0, gt=0, description="Seconds an entry is kept in the shared store."
    )
    store_timeout: float = Field(
        0.25, gt=0, description="Seconds a shared-store operation may take; then it is a miss."
    )
    store_backoff: float = Field(
        1.0,
        ge=0,
        description="Seconds the shared store is not asked again after a failure (misses).",
    )
    bus_url: str = Field(
        "local://",
        description="How revisions reach the other processes: local:// (this process only), "
        "redis://host:port/db (pub/sub; also redis+sentinel://… and redis+cluster://…, "
        "sharded pub/sub) or postgresql://user@host/db (LISTEN/NOTIFY).",
    )
    bus_channel: str | None = Field(
        None,
        description="Channel of the bus. Unset: 'freshkeep:revisions' on Redis, 'freshkeep' on "
        "PostgreSQL (the channel of the change-capture triggers).",
    )
    bus_reconnect_backoff: float = Field(
        0.5, gt=0, description="Seconds before the bus reconnects; doubles on each failure."
    )
    bus_max_reconnect_backoff: float = Field(
        30.0, gt=0, description="Cap of the doubling reconnect backoff of the bus."
    )
    bus_connect_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds one connection attempt of the bus may take; also how long its "
        "start() waits for the first subscribe.",
    )
    bus_publish_timeout: float = Field(
        5.0, gt=0, description="Seconds a publish may take before it is counted as failed."
    )
    bus_ping_interval: float = Field(
        5.0, gt=0, description="Seconds between health checks of the bus's listening connection."
    )
    bus_max_changes_bytes: int = Field(
        65_536,
        ge=0,
        description="Largest bus message that carries a commit's changed rows (past it, the "
        "revisions go alone and other processes rebuild); 0 sends no rows.",
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
    refresh_on_push: bool = Field(
        False,
        description="Rebuild at once, in the background, the sections of unkeyed entries that "
        "revisions pushed by another process move, instead of at their next read.",
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
    lock_lease: float = Field(
        30.0, gt=0, description="Seconds a cross-instance build lock is held at most."
    )
    lock_wait: float = Field(
        10.0,
        ge=0,
        description="Seconds an instance waits for another's build of the same entry before "
        "building it itself.",
    )
    replica_wait: float = Field(
        1.0,
        ge=0,
        description="Seconds a build on a read replica waits for the replica to catch up with "
        "the revisions it must reflect before it builds on the primary.",
    )
    replica_timeout: float = Field(
        2.0,
        gt=0,
        description="Seconds one look at a read replica (connect, begin, read the counters) "
        "may take before the build treats it as unreachable and builds on the primary.",
    )
    memory_max_entries: int = Field(10_000, ge=1, description="Entries kept in memory (LRU).")
    memory_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="Bytes of entries kept in memory (LRU)."
    )
    header_cache: str = Field("X-Freshkeep-Cache", description="Header carrying the status.")
    client_refresh: Literal["limited", "any", "authorized", "never"] = Field(
        "limited",
        description="Who may force a rebuild over HTTP (?refresh=true, Cache-Control: "
        "no-cache): 'limited' (anyone, at most once per client_refresh_interval per entry; "
        "the admin token always), 'any' (anyone, always), 'authorized' (the admin token "
        "only), 'never' (nobody). A request that may not force one is answered as a read "
        "validated against the current revisions. A view's own client_refresh= takes "
        "precedence.",
    )
    client_refresh_interval: float = Field(
        10.0,
        ge=0,
        description="Seconds between two rebuilds of one entry forced by clients without the "
        "admin token, under client_refresh='limited'.",
    )
    status_labels: dict[str, str] = Field(
        default_factory=dict,
        description="What the status header says for each read status, for clients that know "
        "other words: a JSON object such as "
        '{"hit": "hit-revision", "section": "progress-section"}. A status not listed keeps its '
        "name. A view's own labels= take precedence.",
    )
    header_reason: str = Field(
        "X-Freshkeep-Reason",
        description="Header saying why a read was not a hit when no source changed "
        "('expired': older than the policy's max_age).",
    )
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

    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of freshkeep's admin endpoints: GET /health/detailed, the "
        "processor routes, the dashboard, and what `freshkeep health` sends; unset: they are off.",
    )
    service_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL of the running service that `freshkeep health` asks.",
    )
    otel: bool = Field(
        False,
        description="Report spans and metrics through OpenTelemetry (freshkeep[otel]): "
        "applications that call freshkeep.integrations.otel.instrument_from_settings, the demo "
        "hub among them.",
    )
    jobs_backend: Literal["sql", "procrastinate"] = Field(
        "sql",
        description="Job queue: sql (the embedded runner, a table in the database) or "
        "procrastinate (PostgreSQL, freshkeep[jobs]).",
    )
    jobs_url: str | None = Field(
        None, description="Database URL of the job queue (unset: database_url)."
    )
    jobs_concurrency: int = Field(4, ge=1, description="Jobs run at once by each process.")
    jobs_poll_interval: float = Field(
        0.5, gt=0, description="Seconds between polls of the job table by an idle worker."
    )
    jobs_lease: float = Field(
        30.0,
        gt=0,
        description="Seconds without a heartbeat after which a running job is stalled and "
        "put back to waiting.",
    )
    jobs_shutdown_grace: float = Field(
        5.0,
        ge=0,
        description="Seconds a stopping job queue lets running jobs finish before it cancels "
        "them (they are put back to waiting).",
    )
    jobs_keep_finished: float = Field(
        604800.0, ge=0, description="Seconds finished jobs are kept before they are deleted."
    )
    artifact_storage_url: str = Field(
        "freshkeep-artifacts",
        description="Where prebuilt artifacts are stored: a local directory (embedded) or an "
        "fsspec URL such as s3://bucket/prefix (distributed; needs s3fs).",
    )
    artifact_ttl: float = Field(
        86400.0, gt=0, description="Default seconds a built artifact stays fresh."
    )
    artifact_url_secret: SecretStr | None = Field(
        None,
        description="HMAC key signing the URLs of artifacts on local storage. Unset: a random "
        "one per process (URLs then work only on the instance that signed them; several "
        "instances need a shared secret).",
    )
    artifact_url_ttl: float = Field(
        300.0, gt=0, description="Seconds a signed (or presigned S3) artifact URL is valid."
    )
    artifact_gc_batch: int = Field(
        1000, ge=1, description="Rows (and objects) an artifact GC deletes per statement."
    )
    artifact_orphan_grace: float = Field(
        3600.0,
        gt=0,
        description="Seconds an artifact object no row references is kept before GC deletes "
        "it (protects builds in flight).",
    )
    artifact_max_stale_on_error: float = Field(
        3600.0,
        ge=0,
        description="Seconds after its expiry an artifact is still served when its rebuild "
        "fails; expired rows are kept that long before GC deletes them.",
    )

    @classmethod
    def load(cls) -> Self:
        """Read the settings from the environment; a bad value raises ``ConfigurationError``."""
        from pydantic import ValidationError

        from freshkeep.exceptions import ConfigurationError

        try:
            return cls()
        except ValidationError as exc:
            raise ConfigurationError(f"invalid FRESHKEEP_* setting: {exc}") from exc
