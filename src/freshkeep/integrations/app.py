"""``freshkeep --app module:attribute``: find a user's application and its freshkeep components.

The attribute names the application (like procrastinate's ``--app``), also read from
``FRESHKEEP_APP``:

- a :class:`~freshkeep.Keeper`;
- an object holding one, or holding the components directly: a ``keeper`` attribute, a
  dataclass or plain object with :class:`~freshkeep.processing.Pipeline`,
  :class:`~freshkeep.artifacts.ArtifactCache` or :class:`~freshkeep.jobs.JobQueue`
  attributes (looked up a few levels deep, also in lists and dicts, and in a Starlette or
  FastAPI application's ``app.state``);
- a zero-argument callable (a function, a class) or an async factory returning one of those.

:func:`open_app` imports it (the current directory is importable, as with uvicorn), calls or
awaits a factory, and hands back an :class:`App`: the keeper, the pipelines, the artifact caches
(the keeper's :attr:`~freshkeep.Keeper.artifacts` and any found) and the job queues.
:func:`discover` is the one place that decides what a component is.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from types import FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, TypeGuard

from freshkeep.exceptions import ConfigurationError, UnknownProcessorError
from freshkeep.health import Health
from freshkeep.jobs import JobQueue
from freshkeep.keeper import Keeper
from freshkeep.processing import Pipeline

if TYPE_CHECKING:
    from freshkeep.artifacts import ArtifactCache

ENV = "FRESHKEEP_APP"
"""The environment variable of ``--app``."""

_WHAT = (
    "give a Keeper, an object holding one (e.g. an attribute `keeper`) or holding pipelines, "
    "artifact caches or job queues, or a zero-argument function returning one"
)
_DEPTH = 4
"""How many levels :func:`discover` looks down (``app`` → ``state`` → ``hub`` → ``exports`` →
``queue``)."""
_OPAQUE = ("sqlalchemy", "starlette", "fastapi", "pydantic", "asyncio", "logging", "typer")
"""Packages whose objects are never looked into (engines, routers, settings...)."""


@dataclass(frozen=True, slots=True)
class App:
    """The freshkeep components of a user's application (see :func:`discover`)."""

    spec: str
    """Where it came from (``module:attribute``), for messages."""
    keeper: Keeper | None = None
    pipelines: tuple[Pipeline, ...] = ()
    artifacts: Mapping[str, ArtifactCache] = field(default_factory=dict)
    """Artifact caches by name."""
    job_queues: tuple[JobQueue, ...] = ()

    @property
    def health(self) -> Health | None:
        """The keeper's health checks, or ``None`` without a keeper."""
        return self.keeper.health if self.keeper is not None else None

    @property
    def empty(self) -> bool:
        """Whether nothing freshkeep was found."""
        return self.keeper is None and not (self.pipelines or self.artifacts or self.job_queues)

    def processor_names(self) -> list[str]:
        """The names of every pipeline's processors, sorted."""
        return sorted({n for p in self.pipelines for n in p.names()})

    def pipeline_of(self, name: str) -> Pipeline:
        """The first pipeline with a processor ``name``; raises
        :class:`~freshkeep.exceptions.UnknownProcessorError` naming the known ones."""
        for pipeline in self.pipelines:
            if name in pipeline.names():
                return pipeline
        known = ", ".join(self.processor_names()) or "none"
        raise UnknownProcessorError(f"no processor named {name!r} in {self.spec} (known: {known})")

    def caches(self, names: Iterable[str] = ()) -> list[ArtifactCache]:
        """The artifact caches ``names`` (default: all, by name); raises
        :class:`~freshkeep.exceptions.ConfigurationError` for a name it does not have."""
        wanted = list(dict.fromkeys(names)) or sorted(self.artifacts)
        if unknown := [n for n in wanted if n not in self.artifacts]:
            known = ", ".join(sorted(self.artifacts)) or "none"
            raise ConfigurationError(
                f"no artifact cache named {', '.join(map(repr, unknown))} in {self.spec} "
                f"(known: {known})"
            )
        return [self.artifacts[n] for n in wanted]

    async def aclose(self) -> None:
        """Close what the command may have opened: the job queues, then the keeper."""
        for queue in self.job_queues:
            await queue.aclose()
        if self.keeper is not None:
            await self.keeper.aclose()


def discover(obj: object, *, spec: str = "the application") -> App:
    """The components of ``obj``: the keeper (``obj`` itself, or the first one found), the
    pipelines, artifact caches (the keeper's and any found) and job queues found in ``obj``'s
    public attributes, ``_DEPTH`` levels down, through lists, tuples, sets and dicts (and a
    Starlette ``State``). A component is not looked into.

    The keeper's registry (:meth:`Keeper.register <freshkeep.Keeper.register>`) comes
    first: its artifact caches, pipelines and job queues are found without being attributes.
    This is the only place that decides what a component is.
    """
    try:  # needs the artifacts extra; without it an application has no artifact cache
        from freshkeep.artifacts import ArtifactCache as cache_type
    except ImportError:
        cache_type = None  # type: ignore[assignment,misc]
    keepers: list[Keeper] = []
    pipelines: list[Pipeline] = []
    caches: dict[str, ArtifactCache] = {}
    queues: list[JobQueue] = []
    seen: set[int] = set()

    def visit(value: object, depth: int) -> None:
        if id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, Keeper):
            keepers.append(value)
            for name, cache in value.artifacts.items():
                caches.setdefault(name, cache)
            for registered in (*value.pipelines.values(), *value.jobs.values()):
                visit(registered, _DEPTH)  # counted once, whoever else holds it
        elif isinstance(value, Pipeline):
            pipelines.append(value)
        elif cache_type is not None and isinstance(value, cache_type):
            caches.setdefault(value.name, value)
        elif isinstance(value, JobQueue) and not isinstance(value, type):
            queues.append(value)
        elif depth < _DEPTH:
            for child in _children(value, root=depth == 0):
                visit(child, depth + 1)

    visit(obj, 0)
    return App(
        spec,
        keepers[0] if keepers else None,
        tuple(pipelines),
        dict(sorted(caches.items())),
        tuple(queues),
    )


def _children(value: object, *, root: bool) -> list[object]:
    if isinstance(value, str | bytes | int | float | bool | type | ModuleType):
        return []
    if isinstance(value, FunctionType | MethodType) or value is None:
        return []
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    module = type(value).__module__.partition(".")[0]
    state = getattr(value, "_state", None) if type(value).__name__ == "State" else None
    if isinstance(state, dict):  # a Starlette State: app.state
        return list(state.values())
    if not root and module in _OPAQUE:
        return []
    try:
        attrs = vars(value)
    except TypeError:  # __slots__: a slotted dataclass, say
        names = getattr(type(value), "__slots__", ())
        attrs = {n: getattr(value, n, None) for n in ([names] if isinstance(names, str) else names)}
    out = [v for k, v in attrs.items() if not k.startswith("_")]
    if root and module in _OPAQUE:  # a Starlette or FastAPI application: only its state
        out = [v for k, v in attrs.items() if k == "state"]
    return out


def load_object(spec: str) -> object:
    """Import ``module`` and return its ``attribute`` (dots allowed: ``module:obj.attr``).
    Raises :class:`~freshkeep.exceptions.ConfigurationError` in one line saying what to fix."""
    module_name, sep, attr = spec.strip().partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"--app must look like module:attribute (e.g. myservice.main:keeper), not {spec!r}"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:  # like uvicorn: the current dir
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"--app {spec!r}: no module named {exc.name!r}; check the module path (run "
                "from the project's directory, or add it to PYTHONPATH)"
            ) from exc
        raise ConfigurationError(
            f"--app {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:  # the user's module raised while importing
        raise ConfigurationError(
            f"--app {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"--app {spec!r}: module {module_name!r} has no attribute {attr!r}; name the "
                "object that holds your Keeper"
            ) from None
    return obj


async def resolve(spec: str) -> App:
    """The :class:`App` at ``spec`` (``module:attribute``): imported, a factory called (and
    awaited if it is async), its components found by :func:`discover`. Raises
    :class:`~freshkeep.exceptions.ConfigurationError` in one line naming the cause and the fix.
    """
    obj = load_object(spec)
    found = discover(obj, spec=spec)
    if found.empty and _is_factory(obj):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise ConfigurationError(
                f"--app {spec!r} is a callable that needs arguments; {_WHAT}"
            ) from None
        except ValueError:  # no signature to read (a builtin): try it
            pass
        try:
            made = obj()
            if inspect.isawaitable(made):
                made = await made
        except Exception as exc:
            raise ConfigurationError(
                f"--app {spec!r}: calling it failed: {type(exc).__name__}: {exc}"
            ) from exc
        obj, found = made, discover(made, spec=spec)
    if found.empty:
        raise ConfigurationError(
            f"--app {spec!r} is a {type(obj).__name__} with no freshkeep component; {_WHAT} "
            "(components made in an application's lifespan are not there yet: name a factory)"
        )
    return found


def _is_factory(obj: object) -> TypeGuard[Callable[..., object]]:
    """A function, method, class or ``functools.partial``: called for the application. An
    instance with ``__call__`` (an ASGI app) is not a factory."""
    return inspect.isroutine(obj) or inspect.isclass(obj) or isinstance(obj, partial)


@asynccontextmanager
async def open_app(spec: str) -> AsyncIterator[App]:
    """:func:`resolve` ``spec`` for the duration of the ``async with``, then :meth:`App.aclose`."""
    app = await resolve(spec)
    try:
        yield app
    finally:
        await app.aclose()


__all__ = ["ENV", "App", "discover", "load_object", "open_app", "resolve"]
