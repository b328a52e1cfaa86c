"""Every command's ``--help`` reads cleanly on an 80- and a 100-column terminal: no typer
type placeholders (``<str>``, ``<int>``, ``<bool>``), no word broken or cut, and no paragraph
broken where its docstring's source line ended."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from freshkeep.cli import app

runner = CliRunner()
COMMANDS = [
    [],
    ["demo"],
    ["migrate"],
    ["bench"],
    ["process"],
    ["health"],
    ["gc"],
    ["version"],
    ["jobs"],
    ["jobs", "status"],
    ["jobs", "schema"],
    ["jobs", "worker"],
]
_BOX = re.compile(r"[│╭╮╰╯─]")


def _help(command: list[str], columns: int) -> str:
    env = {"COLUMNS": str(columns), "NO_COLOR": "1"}
    result = runner.invoke(app, [*command, "--help"], env=env, prog_name="freshkeep")
    assert result.exit_code == 0, result.output
    return result.output


def _words(text: str) -> set[str]:
    return set(_BOX.sub(" ", text).split())


def test_every_command_is_covered() -> None:
    root = typer.main.get_command(app)

    def walk(command: Any, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found += walk(sub, [*path, name])
        return found

    assert sorted(walk(root, [])) == sorted(COMMANDS)


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "freshkeep")
def test_help_has_no_placeholders_and_breaks_no_word(command: list[str], columns: int) -> None:
    text = _help(command, columns)
    assert "Usage: freshkeep" in text
    assert max(len(line) for line in text.splitlines()) <= columns
    for placeholder in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list"):
        assert placeholder not in text, placeholder
    assert "…" not in text  # nothing cut short
    # Rendered wide enough that nothing wraps, every word is whole: at this width, each word
    # must be one of those.
    whole = _words(_help(command, 1000))
    broken = sorted(_words(text) - whole)
    assert not broken, broken


def test_paragraphs_are_not_broken_at_source_line_ends() -> None:
    """A docstring's paragraph wraps in the source; the help shows it as one paragraph that
    the terminal wraps, not as the source's lines (typer keeps single line breaks)."""
    text = _help(["bench"], 100)
    assert "a fixed TTL, a MAX(updated_at) probe" in " ".join(text.split())
    first = next(line for line in text.splitlines() if "Measure what freshkeep costs" in line)
    assert len(first.rstrip()) > 80  # filled to the width, not cut where the source line ends
    root = _help([], 100)
    bench = next(line for line in root.splitlines() if "│ bench" in line)
    assert len(bench.rstrip()) > 90
