"""docs/index.md names every extra of pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_index_names_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    index = (ROOT / "docs" / "index.md").read_text()
    sentence = re.search(r"The\s+extras are (.*?)\.\n", index, re.S)
    assert sentence is not None, "docs/index.md: no sentence 'The extras are ...'"
    named = set(re.findall(r"`([a-z0-9-]+)`", sentence[1]))
    assert named == set(extras["optional-dependencies"])
