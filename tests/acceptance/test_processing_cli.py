"""``freshkeep process NAME``: runs a hub processor over the session files, with progress."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from freshkeep import cli

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def test_process_runs_then_skips_and_refuses_unknown_names(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "a.jsonl").write_text(
        '{"type": "tool_use", "usage": {"input_tokens": 3}}\n{"text": "5 passed"}\n'
    )
    (root / "alice" / "broken.jsonl").write_text("{oops\n")
    args = ["process", "usage", "--db", str(tmp_path / "hub.db"), "--root", str(root)]
    first = runner.invoke(cli.app, args, env=WIDE)
    assert first.exit_code == 0, first.output
    assert "processed" in first.output and "2" in first.output
    second = runner.invoke(cli.app, args, env=WIDE)
    assert second.exit_code == 0, second.output
    assert "scanned" in second.output

    unknown = runner.invoke(cli.app, ["process", "nope", *args[2:]], env=WIDE)
    assert unknown.exit_code == 2
    assert "no processor named 'nope'" in unknown.output
