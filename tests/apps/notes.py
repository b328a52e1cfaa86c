"""A small application of freshkeep's, as a user writes one: a keeper, a processing pipeline, an
artifact cache and its job queue, in one object. ``freshkeep --app tests.apps.notes:<attr>``
finds them. Everything lives under ``$NOTES_DIR`` (a SQLite file, the notes, the artifacts).

Not a test module: :mod:`tests.integration.test_cli_app` runs the CLI on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from freshkeep import Keeper, Settings
from freshkeep.artifacts import ArtifactCache
from freshkeep.health import Level
from freshkeep.jobs import SQLJobQueue
from freshkeep.processing import Item, Outcome, Pipeline, ProcessContext, Processor
from freshkeep.processing.sql import SQLProcessingState, SQLRunHistory


class Lines(Processor):
    """Counts the lines of each note (``<dir>/notes/*.txt``)."""

    def __init__(self, root: Path) -> None:
        self.name, self.root, self.pattern = "lines", root, "*.txt"

    async def process(self, item: Item, ctx: ProcessContext) -> Outcome:
        return Outcome({"lines": len(item.path.read_text().splitlines())})


@dataclass(eq=False)
class Notes:
    """The application: what ``create`` returns."""

    keeper: Keeper
    pipeline: Pipeline
    exports: ArtifactCache
    queue: SQLJobQueue


def create() -> Notes:
    """The application on ``$NOTES_DIR``."""
    base = Path(os.environ["NOTES_DIR"])
    keeper = Keeper(settings=Settings(admin_token=None))
    keeper.health.add("notes", lambda: (Level.OK, "the notes are readable"))
    queue = SQLJobQueue.from_url(str(base / "app.db"), poll_interval=0.05)
    state = SQLProcessingState(queue.engine)
    pipeline = Pipeline(state, racy_window=0, history=SQLRunHistory(queue.engine, keep=86400))
    pipeline.register(Lines(base / "notes"))

    async def build(key: str) -> bytes:
        return (base / "notes" / key).read_bytes()

    exports = ArtifactCache(
        "notes-export", build, index=queue.engine, storage=str(base / "artifacts"), keeper=keeper
    )
    exports.register_jobs(queue)
    return Notes(keeper, pipeline, exports, queue)


async def create_async() -> Notes:
    """The same, from an async factory."""
    return create()


def keeper_only() -> Keeper:
    """Just a keeper (no pipeline, no cache)."""
    return Keeper(settings=Settings(admin_token=None))


def needs_arguments(path: str) -> Notes:
    """Not an application: it needs an argument."""
    raise AssertionError(path)


def broken() -> Notes:
    """A factory that fails."""
    raise RuntimeError("the notes database is gone")


@dataclass(eq=False)
class Holder:
    """An object that holds a keeper, as a user's own application class does."""

    keeper: Keeper


KEEPER = Keeper(settings=Settings(admin_token=None))
"""A module-level keeper: ``--app tests.apps.notes:KEEPER``."""
HOLDER = Holder(KEEPER)
"""An object holding it: ``--app tests.apps.notes:HOLDER``."""
SERVICE = Starlette()
"""A web application holding the keeper in its state: ``--app tests.apps.notes:SERVICE``."""
SERVICE.state.keeper = KEEPER
EMPTY_SERVICE = Starlette()
"""A web application whose components are made in its lifespan: not found."""
NOT_AN_APP = 42
