#!/usr/bin/env python3
"""Set-up and tasks on a fresh machine with only Python 3.11+.

    python3 dev.py demo [ARGS...]   run the reference hub (`freshkeep demo ARGS...`) from
                                    `.venv-demo`, which holds the hub's dependencies only
    python3 dev.py test [ARGS...]   run every check: ruff, mypy --strict, the package imported
                                    without extras, and the whole test suite (pytest ARGS...)

Each command creates `.venv` if needed and installs what it needs into it (again only when
pyproject.toml changed).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BARE = ROOT / ".venv-bare"
DEMO = ROOT / ".venv-demo"


def run(*cmd: str | Path, **kw: object) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)  # type: ignore[call-overload]


def python(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / "python"


def ensure(env: Path, spec: str) -> Path:
    """Create ``env`` and install ``spec`` into it unless the same install is already there."""
    if not python(env).exists():
        venv.EnvBuilder(with_pip=True).create(env)
        run(python(env), "-m", "pip", "install", "-q", "--upgrade", "pip")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    stamp = env / ".freshkeep-install"
    if not stamp.exists() or stamp.read_text() != digest:
        run(python(env), "-m", "pip", "install", "-q", *spec.split())
        stamp.write_text(digest)
    return python(env)


def demo(args: list[str]) -> int:
    py = ensure(DEMO, "-e .[demo]")  # the hub's dependencies only: no test toolchain
    hub = subprocess.Popen([str(py), "-m", "freshkeep.cli", "demo", *args], cwd=ROOT)
    wait: float | None = None
    while True:
        try:
            return hub.wait(wait)
        except KeyboardInterrupt:  # Ctrl+C reached the hub too: it stops, and so do we
            wait = 5.0
        except subprocess.TimeoutExpired:  # the interrupt was ours alone: pass it on
            hub.send_signal(signal.SIGINT)
            wait = None


def test(args: list[str]) -> int:
    py = ensure(VENV, "-e .[test]")
    paths = [p for p in ("src", "tests", "benchmarks", "dev.py") if (ROOT / p).exists()]
    run(py, "-m", "ruff", "check", *paths)
    run(py, "-m", "ruff", "format", "--check", *paths)
    run(py, "-m", "mypy")
    bare = ensure(BARE, "-e .")  # no extras: the core imports, integrations name their extra
    run(bare, "-c", NO_EXTRAS_CHECK)
    return subprocess.call([str(py), "-m", "pytest", *args], cwd=ROOT)


NO_EXTRAS_CHECK = """
import importlib, freshkeep
assert freshkeep.Keeper
for mod, extra in [("freshkeep.integrations.sqlalchemy", "sqlalchemy"),
                   ("freshkeep.notify.sql", "sqlalchemy"),
                   ("freshkeep.sql.migrate", "sqlalchemy"),
                   ("freshkeep.sql", "sqlalchemy"),
                   ("freshkeep.processing.sql", "sqlalchemy"),
                   ("freshkeep.integrations.starlette", "starlette"),
                   ("freshkeep.integrations.dashboard", "starlette"),
                   ("freshkeep.integrations.prometheus", "prometheus"),
                   ("freshkeep.health.http", "starlette"),
                   ("freshkeep.cli._main", "cli"),
                   ("freshkeep.stores.redis", "redis"),
                   ("freshkeep.buses.redis", "redis"),
                   ("freshkeep.buses.postgres", "postgres"),
                   ("freshkeep.artifacts", "artifacts"),
                   ("freshkeep.jobs.procrastinate", "jobs"),
                   ("freshkeep.cli.jobs", "cli")]:
    try:
        importlib.import_module(mod)
    except freshkeep.MissingDependencyError as exc:
        assert f"freshkeep[{extra}]" in str(exc), exc
    else:
        raise SystemExit(f"{mod} imported without its extra")
import subprocess, sys
run = subprocess.run([sys.executable, "-c", "import freshkeep.cli; freshkeep.cli.main()"],
                     capture_output=True, text=True)
lines = run.stderr.strip().splitlines()
assert run.returncode == 2 and len(lines) == 1 and "freshkeep[cli]" in lines[0], run.stderr
print("no-extras import: ok")
"""


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        print(__doc__)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    return demo(args) if command == "demo" else test(args)


if __name__ == "__main__":
    sys.exit(main())
