"""How the ``freshkeep`` commands show their help: plain metavars, unbroken paragraphs.

Typer shows every value's type as ``<str>``, ``<int>``, ``<bool>`` (flags and ``--help``
included), and keeps the single line breaks of a docstring, so a paragraph wrapped in the
source breaks mid-sentence on a terminal. :class:`HelpGroup` (the class of the root command
and of ``freshkeep jobs``) tidies each command it hands out: a paragraph of its help is one
line (the terminal wraps it), a flag shows no metavar, a value shows its metavar or an
upper-case type (``TEXT``, ``INTEGER``, ``FLOAT``, ``PATH``) as click does, and an argument
its name alone.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer.core

_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def unwrap(text: str | None) -> str | None:
    """``text`` with each paragraph on one line (paragraphs stay apart; a ``\\b`` paragraph,
    click's mark for verbatim text, keeps its lines)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


class _Argument(typer.core.TyperArgument):
    """An argument shown by its name alone (typer shows its type beside it)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _type_name(shown: str) -> str:
    """Typer's ``<int>``, ``<int range>``, ``<list[str]>``, ``<path>`` as ``INTEGER``,
    ``INTEGER``, ``TEXT``, ``PATH``."""
    label = shown.strip("<>").removesuffix(" range")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _TYPES.get(label, label.upper())


def _metavars(params: list[Any], ctx: Any) -> None:
    for param in params:
        if isinstance(param, typer.core.TyperArgument):
            param.__class__ = _Argument
        elif isinstance(param, typer.core.TyperOption) and param.metavar is None:
            if param.is_flag or param.count:
                param.metavar = ""
            else:
                param.metavar = _type_name(param.display_type(ctx))


def tidy(command: Any, ctx: Any) -> None:
    """Make ``command``'s help plain (see the module docstring); idempotent."""
    command.help = unwrap(command.help)
    command.short_help = unwrap(command.short_help)
    _metavars(command.get_params(ctx), ctx)


class HelpGroup(typer.core.TyperGroup):
    """A group whose own help and whose commands' help are tidied (:func:`tidy`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)
        self.help = unwrap(self.help)
        _metavars(params, ctx)
        return params

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy(command, ctx)
        return command
