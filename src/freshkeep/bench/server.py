"""The benchmark's server: the hub with its ``/bench/*`` routes under uvicorn, one worker.

``python -m freshkeep.bench.server --db PATH --port PORT --seed-tasks N`` (started by
:mod:`freshkeep.bench.service`). uvicorn runs with uvloop and httptools when they are installed
(the ``bench`` extra), without access log.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging


def event_loop() -> str:
    """``uvloop`` when it is installed, else ``asyncio``."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def http_impl() -> str:
    """``httptools`` when it is installed, else ``h11``."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def main(argv: list[str] | None = None) -> None:
    """Serve the hub with the benchmark's routes until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m freshkeep.bench.server")
    parser.add_argument("--db", required=True, help="SQLite file path or async SQLAlchemy URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed-tasks", type=int, default=10_000)
    args = parser.parse_args(argv)

    import uvicorn

    from freshkeep.bench.modes import install
    from freshkeep.demo.app import create_app

    logging.getLogger("freshkeep").setLevel(logging.WARNING)
    app = create_app(args.db, seed_tasks=args.seed_tasks)
    install(app)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop=event_loop(),
        http=http_impl(),
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":  # pragma: no cover - run as a process by the benchmark
    main()
