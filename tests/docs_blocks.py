"""The Python blocks of the README and the docs: find them, check their markers, run them.

Every fenced ```python block of ``README.md`` and ``docs/*.md`` has a marker on the line right
before its fence (see docs/layout.md, "Code blocks in the docs"):

- ``<!-- run: ID -->``: a test runs it, as ``run_block(python_block(PAGE, ID), names)``;
- ``<!-- fragment: WHY -->``: it is not meant to run alone (a signature, a partial snippet, a
  block that needs a server it names), and says why.

``tests/unit/test_docs_blocks.py`` fails for a block without a marker, and for a ``run`` block
that no test fetches with :func:`python_block`.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"

_FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>[a-z]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_PYTHON = {"python", "py", "python3"}
BLOCK_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its code and its marker (if any)."""

    page: str  # "README.md", or a file name in docs/
    line: int  # the line of its opening fence (1-based)
    code: str  # its text, without the list indentation it may have
    kind: str | None  # "run", "fragment", another word (a typo), or None: no marker
    value: str  # the block id of a "run" block, the reason of a "fragment"

    @property
    def where(self) -> str:
        return f"{page_path(self.page).relative_to(ROOT)}:{self.line}"


def pages() -> list[str]:
    """Every page whose blocks are checked: the README and ``docs/*.md``."""
    return ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))]


def page_path(page: str) -> Path:
    return ROOT / page if page == "README.md" else DOCS / page


def parse_blocks(page: str, text: str) -> list[Block]:
    """The Python blocks of ``text`` (the markdown of ``page``), with their markers."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        ticks = opening["ticks"]
        end = i + 1
        while end < len(lines):
            closing = _FENCE.match(lines[end])
            if closing and closing["ticks"][0] == ticks[0] and len(closing["ticks"]) >= len(ticks):
                if not closing["info"]:
                    break
            end += 1
        if opening["info"].lower() in _PYTHON:
            marker = _MARKER.match(lines[i - 1]) if i > 0 else None
            code = textwrap.dedent("\n".join(lines[i + 1 : end])) + "\n"
            found.append(
                Block(
                    page,
                    i + 1,
                    code,
                    marker["kind"] if marker else None,
                    marker["value"] if marker else "",
                )
            )
        i = end + 1
    return found


def blocks(page: str) -> list[Block]:
    return parse_blocks(page, page_path(page).read_text())


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def python_block(page: str, block_id: str) -> Block:
    """The block of ``page`` marked ``<!-- run: block_id -->`` (``page``: ``"README.md"`` or a
    file name in ``docs/``)."""
    marked = [b for b in blocks(page) if b.kind == "run" and b.value == block_id]
    assert len(marked) == 1, f"{len(marked)} blocks of {page} are marked <!-- run: {block_id} -->"
    return marked[0]


async def run_block(
    block: Block | str, names: dict[str, Any], *, where: str | None = None
) -> dict[str, Any]:
    """Run a block's code (it may ``await``) as the body of a coroutine, with ``names`` as its
    globals: the names the page gives it in its text or in an earlier block. Returns the
    names it defined. A traceback points at the page's lines."""
    if isinstance(block, Block):
        code, first = block.code, block.line + 1
        filename = where or str(page_path(block.page))
    else:
        code, first, filename = block, 2, where or "<docs>"
    body = textwrap.indent(code, "    ")
    padding = "\n" * (first - 2)  # the block's first line is line `first` of the page
    source = f"{padding}async def __block__():\n{body}\n    return locals()\n"
    namespace = dict(names)
    # dont_inherit: not this module's ``from __future__ import annotations``, so annotations are
    # evaluated where they are written, as at a module's top level (FastAPI reads them)
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    found: dict[str, Any] = await namespace["__block__"]()
    return found


def compile_block(block: Block) -> None:
    """Compile a block as :func:`run_block` runs it; raises ``SyntaxError``."""
    body = textwrap.indent(block.code, "    ")
    compile(f"async def __block__():\n{body}\n", block.where, "exec", dont_inherit=True)


@cache
def fetched_blocks() -> tuple[tuple[str, str, str], ...]:
    """``(page, block id, where)`` of every ``python_block(PAGE, ID)`` call with literal
    arguments in the tests."""
    return tuple(_fetched_blocks())


def _fetched_blocks() -> Iterator[tuple[str, str, str]]:
    for path in sorted(TESTS.rglob("*.py")):
        source = path.read_text()
        if "python_block(" not in source:
            continue
        for node in ast.walk(ast.parse(source, str(path))):
            if not isinstance(node, ast.Call) or len(node.args) != 2:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "python_block":
                continue
            page, block_id = node.args
            if isinstance(page, ast.Constant) and isinstance(block_id, ast.Constant):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                yield str(page.value), str(block_id.value), where
