"""The in-process hit in CPU instructions, counted by callgrind: a figure the machine's load
does not move, beside the library level's timings (which a busy 2-core machine does).

``python -m benchmarks.hit_callgrind [--json PATH]`` runs each case under
``valgrind --tool=callgrind`` twice, with ``SMALL`` and ``LARGE`` operations, and reports the
instructions per operation (the difference of the two counts over the difference of the
operations: start-up and set-up cancel out) and each case's ratio to the ``await`` floor.

Cases: ``await`` (a coroutine returning a dict), ``get`` (``await view.get()``), ``read``
(``await view.read()``) and ``get_keyed`` (``await view.get(key)`` on a view whose sources
depend on the key). Every case includes its ``for`` loop, as the library level's rows do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

SMALL, LARGE = 20_000, 220_000
CASES = ("await", "get", "read", "get_keyed")
TARGET = 2.0


async def _run(case: str, n: int) -> None:
    from freshkeep import BuildContext, Keeper, Section
    from freshkeep.testing import MemoryRevisions

    async def build(ctx: BuildContext) -> dict[str, Any]:
        return {"key": ctx.key}

    keeper = Keeper(MemoryRevisions(), probe="interval")
    plain = keeper.view("plain", sections={"s": Section(build, ["t:a"])})
    keyed = keeper.view("keyed", sections={"s": Section(build, lambda key: ["t:a"])})
    await plain.get()
    await plain.read()
    await keyed.get("k")
    value = {"summary": b"{}"}

    async def coro() -> dict[str, bytes]:
        return value

    get, read, kget = plain.get, plain.read, keyed.get
    if case == "await":
        for _ in range(n):
            await coro()
    elif case == "get":
        for _ in range(n):
            await get()
    elif case == "read":
        for _ in range(n):
            await read()
    elif case == "get_keyed":
        for _ in range(n):
            await kget("k")
    else:
        raise SystemExit(f"unknown case {case!r}")


def _instructions(case: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += [sys.executable, "-m", "benchmarks.hit_callgrind", "--case", case, "--n", str(n)]
        subprocess.run(cmd, check=True, capture_output=True)
        with open(out) as f:
            m = re.search(r"^summary: (\d+)", f.read(), re.M)
        if m is None:
            raise RuntimeError("callgrind wrote no summary")
        return int(m[1])


def measure() -> dict[str, Any]:
    """Instructions per operation of every case, and each one's ratio to ``await``."""
    per_op = {
        case: (_instructions(case, LARGE) - _instructions(case, SMALL)) / (LARGE - SMALL)
        for case in CASES
    }
    floor = per_op["await"]
    return {
        "small": SMALL,
        "large": LARGE,
        "target": TARGET,
        "cases": {
            case: {"instructions": round(v, 1), "x_await": round(v / floor, 3)}
            for case, v in per_op.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--n", type=int, default=SMALL)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.case:  # one run, under callgrind
        asyncio.run(_run(args.case, args.n))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    result = measure()
    print("| case | instructions / op | x await | ≤ 2x |")
    print("|---|---:|---:|---|")
    for case, c in result["cases"].items():
        met = "" if case == "await" else ("yes" if c["x_await"] <= TARGET else "**no**")
        print(f"| {case} | {c['instructions']:,.0f} | {c['x_await']:.2f} | {met} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
