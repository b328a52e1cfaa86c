"""Run the Python blocks of the docs: find a block by a line it holds, and run it as the body
of a coroutine, with the names it takes from the text around it given by the test."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def python_block(page: str, containing: str) -> str:
    """The one ```python block of ``docs/<page>`` whose text contains ``containing``."""
    blocks = [b for b in _BLOCK.findall((DOCS / page).read_text()) if containing in b]
    assert len(blocks) == 1, f"{len(blocks)} blocks of docs/{page} contain {containing!r}"
    return str(blocks[0])


async def run_block(code: str, names: dict[str, Any], *, where: str = "<docs>") -> dict[str, Any]:
    """Run ``code`` (it may ``await``) with ``names`` as its globals; the names it defined."""
    body = textwrap.indent(code, "    ")
    source = f"async def __block__():\n{body}\n    return locals()\n"
    namespace = dict(names)
    exec(compile(source, where, "exec"), namespace)
    found: dict[str, Any] = await namespace["__block__"]()
    return found
