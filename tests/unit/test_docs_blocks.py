"""Every Python block of the README and the docs is run by a test or marked as a fragment.

The convention (docs/layout.md, "Code blocks in the docs"): the line right before a block's
fence is ``<!-- run: ID -->`` (a test runs it, fetched with ``python_block(PAGE, ID)``) or
``<!-- fragment: WHY -->`` (not meant to run alone). The blocks themselves run in
``tests/unit/test_docs_examples_*.py``, ``tests/integration/test_docs_examples.py`` and beside
the tests of what they show.
"""

from __future__ import annotations

from tests.docs_blocks import (
    BLOCK_ID,
    Block,
    all_blocks,
    compile_block,
    fetched_blocks,
    pages,
    parse_blocks,
)


def marker_problems(found: list[Block], fetched: set[tuple[str, str]]) -> list[str]:
    """What is wrong with the markers of ``found``, given the ``(page, id)`` the tests fetch."""
    problems: list[str] = []
    ids: set[tuple[str, str]] = set()
    for block in found:
        if block.kind is None:
            problems.append(
                f"{block.where}: no marker; put <!-- run: ID --> (and run it in a test) or "
                "<!-- fragment: WHY --> on the line before the fence"
            )
        elif block.kind == "fragment":
            if not block.value:
                problems.append(f"{block.where}: a fragment says why it does not run")
        elif block.kind == "run":
            if not BLOCK_ID.match(block.value):
                problems.append(f"{block.where}: block id {block.value!r} is not like 'a-b-1'")
            elif (block.page, block.value) in ids:
                problems.append(f"{block.where}: block id {block.value!r} is used twice")
            elif (block.page, block.value) not in fetched:
                problems.append(
                    f"{block.where}: marked run: {block.value}, but no test calls "
                    f'python_block("{block.page}", "{block.value}")'
                )
            ids.add((block.page, block.value))
            try:
                compile_block(block)
            except SyntaxError as exc:
                problems.append(f"{block.where}: does not compile: {exc}")
        else:
            problems.append(f"{block.where}: unknown marker {block.kind!r} (run or fragment)")
    return problems


def test_every_block_is_run_or_a_fragment() -> None:
    fetched = {(page, block_id) for page, block_id, _ in fetched_blocks()}
    problems = marker_problems(all_blocks(), fetched)
    assert not problems, "\n".join(problems)


def test_every_block_a_test_fetches_exists() -> None:
    marked = {(b.page, b.value) for b in all_blocks() if b.kind == "run"}
    missing = [
        f"{where}: python_block({page!r}, {block_id!r}): no such <!-- run: --> block"
        for page, block_id, where in fetched_blocks()
        if (page, block_id) not in marked
    ]
    assert not missing, "\n".join(missing)


def test_the_pages_are_the_readme_and_the_docs() -> None:
    assert pages()[0] == "README.md"
    assert {"user-guide.md", "reference.md", "layout.md"} <= set(pages())


# -- the checker itself ------------------------------------------------------------------------

PAGE = """\
Text.

```python
unmarked = 1
```

<!-- run: adds -->
```python
total = 1 + 1
```

1. In a list:

   <!-- fragment: a signature -->
   ```python
   f(x: int) -> int
   ```

<!-- run: never-fetched -->
```py
pass
```

<!-- run: broken -->
```python
def (
```

<!-- frgment: a typo -->
```python
x = 1
```

```sh
echo not python
```

<!-- fragment: -->
```python
y = 2
```
"""


def test_the_checker_finds_each_kind_of_problem() -> None:
    found = parse_blocks("page.md", PAGE)
    assert [(b.line, b.kind, b.value) for b in found] == [
        (3, None, ""),
        (8, "run", "adds"),
        (15, "fragment", "a signature"),
        (20, "run", "never-fetched"),
        (25, "run", "broken"),
        (30, "frgment", "a typo"),
        (39, "fragment", ""),
    ]
    assert found[2].code == "f(x: int) -> int\n"  # the list's indentation is removed
    problems = marker_problems(found, {("page.md", "adds"), ("page.md", "broken")})
    assert [p.split(": ", 1)[0] for p in problems] == [
        "docs/page.md:3",
        "docs/page.md:20",
        "docs/page.md:25",
        "docs/page.md:30",
        "docs/page.md:39",
    ]
    assert "no marker" in problems[0]
    assert 'no test calls python_block("page.md", "never-fetched")' in problems[1]
    assert "does not compile" in problems[2]
    assert "unknown marker 'frgment'" in problems[3]
    assert "says why" in problems[4]
