"""Every setting is documented in the operator guide, under its environment variable."""

from __future__ import annotations

from pathlib import Path

from freshkeep.settings import Settings

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"


def test_every_setting_has_a_row_in_the_operator_guide() -> None:
    text = GUIDE.read_text()
    missing = [
        name
        for name in Settings.model_fields
        if f"| `{name}` | `FRESHKEEP_{name.upper()}` |" not in text
    ]
    assert missing == []
