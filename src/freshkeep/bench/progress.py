"""How the benchmark reports its progress (the CLI shows it with rich)."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """Receives the benchmark's progress: stages, steps within a stage, and notes."""

    def stage(self, name: str, total: float) -> None:
        """A stage of ``total`` steps starts."""
        ...

    def advance(self, amount: float = 1.0) -> None:
        """``amount`` steps of the current stage are done."""
        ...

    def note(self, text: str) -> None:
        """Something the person running the benchmark should read."""
        ...


class NullReporter:
    """A :class:`Reporter` that shows nothing."""

    def stage(self, name: str, total: float) -> None:
        """Ignored."""

    def advance(self, amount: float = 1.0) -> None:
        """Ignored."""

    def note(self, text: str) -> None:
        """Ignored."""


class PrintReporter:
    """A :class:`Reporter` that prints stages and notes (for plain logs)."""

    def stage(self, name: str, total: float) -> None:
        """Print the stage's name."""
        print(f"[bench] {name}", flush=True)

    def advance(self, amount: float = 1.0) -> None:
        """Ignored."""

    def note(self, text: str) -> None:
        """Print the note."""
        print(f"[bench] {text}", flush=True)
