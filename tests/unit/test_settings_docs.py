"""Every setting is documented in the operator guide, under its environment variable: the
library's (``Settings``) and the demo hub's own (``HubSettings``)."""

from __future__ import annotations

from pathlib import Path

from freshkeep.demo.settings import HubSettings
from freshkeep.settings import Settings

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"


def _rows(text: str) -> set[str]:
    return {line.split("|")[1].strip(" `") for line in text.splitlines() if line.startswith("| `")}


def test_every_setting_has_a_row_in_the_operator_guide() -> None:
    text = GUIDE.read_text()
    missing = [
        name
        for name in HubSettings.model_fields  # a subclass: the library's settings and the hub's
        if f"| `{name}` | `FRESHKEEP_{name.upper()}` |" not in text
    ]
    assert missing == []


def test_the_hub_settings_are_in_their_own_table() -> None:
    library, _, hub = GUIDE.read_text().partition("### The demo hub's settings")
    own = set(HubSettings.model_fields) - set(Settings.model_fields)
    assert own and own <= _rows(hub)
    assert not own & _rows(library)
    assert set(Settings.model_fields) <= _rows(library)
