"""A job queue for ``freshkeep jobs worker --app tests.integration.jobs_app:make_queue``.

Not a test module: :mod:`tests.unit.test_jobs_cli` runs it. The database is ``$JOBS_DB``; the
``touch`` task creates the file named by its ``path`` argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from freshkeep.jobs import JobContext, SQLJobQueue


async def touch(ctx: JobContext, args: dict[str, Any]) -> None:
    Path(args["path"]).write_text(ctx.job_id)


def make_queue() -> SQLJobQueue:
    queue = SQLJobQueue.from_url(os.environ["JOBS_DB"], poll_interval=0.05, create_tables=True)
    queue.task("touch", touch)
    return queue
