"""The demo hub's own settings live in ``HubSettings``, read from the same environment names;
the library's ``Settings`` no longer has them."""

from __future__ import annotations

import pytest

from freshkeep.demo.settings import HubSettings
from freshkeep.exceptions import ConfigurationError
from freshkeep.settings import Settings

HUB_ONLY = {
    "sessions_root",
    "processing_interval",
    "processor_intervals",
    "processing_retry_backoff",
    "processing_max_retry_backoff",
    "processing_history_keep",
    "max_body_bytes",
    "max_upload_bytes",
}


def test_the_hub_settings_are_the_hubs_alone() -> None:
    assert HUB_ONLY == set(HubSettings.model_fields) - set(Settings.model_fields)
    assert {"admin_token", "service_url", "database_url"} <= set(Settings.model_fields)


def test_same_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHKEEP_SESSIONS_ROOT", "/srv/sessions")
    monkeypatch.setenv("FRESHKEEP_PROCESSING_INTERVAL", "5")
    monkeypatch.setenv("FRESHKEEP_RESYNC_INTERVAL", "2")
    hub = HubSettings.load()
    assert (hub.sessions_root, hub.processing_interval, hub.resync_interval) == (
        "/srv/sessions",
        5.0,
        2.0,
    )
    assert isinstance(hub, Settings) and not hasattr(Settings.load(), "sessions_root")
    monkeypatch.setenv("FRESHKEEP_PROCESSING_INTERVAL", "-1")
    with pytest.raises(ConfigurationError, match="processing_interval"):
        HubSettings.load()


def test_of_keeps_what_a_plain_settings_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHKEEP_SESSIONS_ROOT", "/srv/sessions")
    given = Settings(artifact_storage_url="/srv/objects", resync_interval=7)
    hub = HubSettings.of(given)
    assert (hub.artifact_storage_url, hub.resync_interval) == ("/srv/objects", 7.0)
    assert "artifact_storage_url" in hub.model_fields_set  # still "explicit" for the exports
    assert hub.sessions_root == "/srv/sessions"
    assert HubSettings.of(hub) is hub
    assert HubSettings.of(None).sessions_root == "/srv/sessions"


def test_the_body_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = HubSettings()
    assert (hub.max_body_bytes, hub.max_upload_bytes) == (1024 * 1024, 64 * 1024 * 1024)
    monkeypatch.setenv("FRESHKEEP_MAX_BODY_BYTES", "2048")
    assert HubSettings.load().max_body_bytes == 2048
    monkeypatch.setenv("FRESHKEEP_MAX_BODY_BYTES", "-1")
    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        HubSettings.load()
