"""Property-based fuzzing of the hub's API from its own OpenAPI schema (schemathesis).

Every operation of the schema is fuzzed in-process (ASGI, no server), with every check of
schemathesis on: no 5xx, every status and body as documented, schema-valid requests accepted
and schema-violating ones refused, ``Allow`` on 405, the admin token enforced where it is
declared. Each hub's own schema is used: a hub with an admin token (requests sent with the
token, and to the routes that need it also without) and a hub without one (no token sent; its
admin routes are documented as off). Bounded: a
few examples per operation, a deadline per example, and a time limit for the whole run; the
examples are the same on every run (derandomized, no example database).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from starlette.types import ASGIApp, Receive, Scope, Send

from freshkeep.demo import create_app
from freshkeep.demo.settings import HubSettings

TOKEN = "fuzz-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEEPER = os.environ.get("FRESHKEEP_FUZZ_EXAMPLES")
"""A deeper run, by hand: that many random examples (new ones on each run), and more time."""
EXAMPLES = int(DEEPER or 12)
"""Examples generated per operation and hub (besides schemathesis's explicit boundary cases)."""
BUDGET = 45.0 * max(1.0, EXAMPLES / 12)
"""Seconds the whole run may take on a 2-core machine, for every operation together."""


def _schema(token: str | None) -> schemathesis.BaseSchema:
    # The schema only: an application that is never started, on a database never opened.
    app_settings = HubSettings(admin_token=token)
    spec = create_app("sqlite+aiosqlite:///:memory:", seed_tasks=0, settings=app_settings)
    # The default configuration (no schemathesis.toml is looked for): every check is on.
    schema = schemathesis.openapi.from_dict(spec.openapi(), config=SchemathesisConfig())
    load_all_checks()
    operation = next(iter(schema.get_all_operations())).ok()
    checks = schema.config.checks_config_for(operation=operation, phase=None)
    off = [name for name in CHECKS.get_all_names() if not checks.get_by_name(name=name).enabled]
    assert off == [], f"checks turned off: {off}"
    return schema


class Forward:
    """An ASGI application that passes everything on to the hub a fixture made (``target``):
    the schema is loaded when the module is, the hub only once the tests run."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "the run fixture sets the hub"
        await self.target(scope, receive, send)


with_token, without_token = _schema(TOKEN), _schema(None)
with_token.app, without_token.app = Forward(), Forward()  # what from_asgi() sets


def _hub(root: Path, token: str | None) -> FastAPI:
    root.mkdir()
    hub_settings = HubSettings(
        admin_token=token,
        sessions_root=str(root / "sessions"),
        artifact_storage_url=str(root / "artifacts"),
        processing_interval=0,  # runs only when asked (POST /admin/processors/.../run)
    )
    return create_app(str(root / "hub.db"), seed_tasks=20, settings=hub_settings)


@dataclass
class Run:
    """The hubs fuzzed, and what the run cost."""

    with_token: FastAPI
    without_token: FastAPI
    started: float = field(default_factory=time.monotonic)
    requests: int = 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("fuzz")
    found = Run(_hub(root / "token", TOKEN), _hub(root / "none", None))
    with_token.app.target, without_token.app.target = found.with_token, found.without_token
    yield found
    asgi.shutdown_lifespans()  # stop the hubs the ASGI transport started (their lifespans)
    elapsed = time.monotonic() - found.started
    assert elapsed < BUDGET, f"the fuzz run took {elapsed:.1f} s ({found.requests} requests)"


BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=3),  # per example: a slow request is a failure too
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
    derandomize=DEEPER is None,  # the same examples on every run (CI): failures stay found
)


@with_token.parametrize()
@BOUNDED
def test_the_hub_with_a_token_conforms(case: schemathesis.Case, run: Run) -> None:
    """A hub with an admin token: each request sent with the token, and to the routes that
    need it also without it (the hub without a token covers the others without it)."""
    secured = "security" in case.operation.definition.raw
    for headers in (AUTH, {}) if secured else (AUTH,):
        run.requests += 1
        case.call_and_validate(headers=headers)


@without_token.parametrize()
@BOUNDED
def test_the_hub_without_a_token_conforms(case: schemathesis.Case, run: Run) -> None:
    """A hub without an admin token (its admin routes are off)."""
    run.requests += 1
    case.call_and_validate()
