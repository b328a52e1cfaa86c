"""Cached async functions: :meth:`Keeper.cached <freshkeep.Keeper.cached>`.

``@keeper.cached(sources=..., policy=...)`` on an ``async def`` makes it a keyed
:class:`~freshkeep.views.View` whose builder is the function: a call answers the function's
value from the view, with the same statuses, bounds and single-flight builds as any view, and
the view shows in the keeper's stats, metrics and dashboard under the function's name.

The key of a call is made from its arguments, bound to the function's signature with the
defaults filled in, so ``f(1)``, ``f(a=1)`` and ``f(1, b=2)`` (when ``b=2`` is the default) are
one entry: no parameter, the key ``None``; one, its value; several, the tuple of their values in
the signature's order (``*args`` a tuple, ``**kwargs`` a sorted tuple of items). A value that is
not an ``int``, a ``str`` or ``None`` is tagged with its type (``(type name, value)``), so
``f(1)``, ``f(True)`` and ``f(1.0)`` are three entries, and a ``datetime`` and its ISO text two,
in a process and in a shared store alike. An argument that cannot be hashed raises
:class:`TypeError` at the call; give ``key=`` (a function of the same arguments returning a
hashable key, used as it is) for such arguments.

A partitioned source (``table_source(Order, by="customer_id")``) follows the argument of the
parameter named as its column (``customer_id``); a function of one parameter, that parameter
whatever its name; with ``key=``, the key itself. A function of several parameters none of which
is named so is refused (:class:`~freshkeep.exceptions.ConfigurationError`).

``per_principal=True`` keys entries by the reader too: the function then has a parameter named
``principal`` (the reader, a string), passed to the function and kept out of the key.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast

import orjson

from freshkeep._view_types import BuildContext, ClientRefresh, Probe, Section, SourcesOf
from freshkeep.core.entry import Read
from freshkeep.core.partitions import Partitioned
from freshkeep.core.policy import Policy
from freshkeep.exceptions import ConfigurationError

if TYPE_CHECKING:
    from freshkeep.keeper import Keeper
    from freshkeep.views import View

__all__ = ["Cached", "cached"]

P = ParamSpec("P")
R = TypeVar("R")

PRINCIPAL = "principal"
"""The parameter a per-principal cached function reads its reader from."""

_MAX_CALLS = 10_000
"""How many keys' arguments a function with its own ``key=`` remembers, to build from."""


class Cached(Generic[P, R]):
    """An async function whose value is kept fresh by a view (made by :func:`cached`).

    Calling it returns the function's value, decoded from the view's JSON (each call its own
    copy: a tuple comes back as a list, as every instance would see it).
    """

    def __init__(
        self,
        keeper: Keeper,
        fn: Callable[P, Awaitable[R]],
        *,
        sources: Iterable[str | Partitioned] | SourcesOf,
        policy: Policy | None = None,
        key: Callable[P, Hashable] | None = None,
        name: str | None = None,
        per_principal: bool = False,
        public: bool = False,
        probe: Probe | None = None,
        version: str = "",
        client_refresh: ClientRefresh | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"@keeper.cached needs an async function, not {fn!r}")
        self.fn = fn
        self.signature = inspect.signature(fn)
        params = self.signature.parameters
        if per_principal and PRINCIPAL not in params:
            raise ConfigurationError(
                f"{fn.__qualname__}: a per-principal cached function takes the reader as a "
                f"parameter named {PRINCIPAL!r}"
            )
        self.per_principal = per_principal
        self._names = tuple(n for n in params if not (per_principal and n == PRINCIPAL))
        self._kinds = {n: p.kind for n, p in params.items()}
        self._key = key
        if not callable(sources):
            sources = list(sources)
        section = Section(
            self._build,
            sources,
            partition_of=None
            if key is not None or callable(sources)
            else self._partition_of(sources),
        )
        # with key=: the arguments of the latest call per (principal, key), to build from
        self._calls: OrderedDict[Hashable, tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()
        self.view: View = keeper.view(
            name if name is not None else fn.__qualname__,
            sections={"default": section},
            policy=policy,
            probe=probe,
            per_principal=per_principal,
            public=public,
            version=version,
            client_refresh=client_refresh,
        )
        """The view behind the function: serve it, invalidate it, read its stats."""
        functools.update_wrapper(self, fn)

    # -- keys -------------------------------------------------------------------------------

    def key_of(self, *args: P.args, **kwargs: P.kwargs) -> Hashable:
        """The view's key of a call with these arguments (:class:`TypeError` when they do not
        bind to the function's signature, or an argument cannot be hashed)."""
        return self._key_and_principal(args, kwargs)[0]

    def _key_and_principal(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Hashable, str | None]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        principal = arguments.get(PRINCIPAL) if self.per_principal else None
        if self._key is not None:
            key = self._key(*args, **kwargs)
            _check_hashable(self.fn, "key=", key)
            return key, principal
        return self.key_from(arguments), principal

    def route_key(self, values: Mapping[str, Any], principal: str | None = None) -> Hashable:
        """The view's key of a call with the arguments ``values`` by name (a route's
        parameters) for ``principal``; with ``key=``, the call is remembered to build from."""
        if self._key is None:
            return self.key_from(values)
        kwargs = dict(values)
        if self.per_principal:
            kwargs[PRINCIPAL] = principal
        key = cast(Callable[..., Hashable], self._key)(**kwargs)
        _check_hashable(self.fn, "key=", key)
        self._remember((principal, key), (), kwargs)
        return key

    def key_from(self, arguments: Mapping[str, Any]) -> Hashable:
        """The view's key of a call whose (bound, defaulted) arguments are ``arguments``:
        each value tagged with its type unless it is an ``int``, a ``str`` or ``None``."""
        values = []
        for name in self._names:
            value = arguments[name]
            kind = self._kinds[name]
            if kind is inspect.Parameter.VAR_KEYWORD:
                value = tuple((k, tag(v)) for k, v in sorted(value.items()))
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                value = tuple(tag(v) for v in value)
            _check_hashable(self.fn, f"argument {name!r}", value)
            if (
                kind is not inspect.Parameter.VAR_KEYWORD
                and kind is not inspect.Parameter.VAR_POSITIONAL
            ):
                value = tag(value)
            values.append(value)
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def _partition_of(self, sources: Iterable[str | Partitioned]) -> Callable[..., object]:
        """How a partitioned source finds its value in a key: the item of the parameter named
        as its column (a function of one parameter: that parameter, whatever its name)."""
        names = self._names
        index: dict[Partitioned, int | None] = {}
        for s in sources:
            if not isinstance(s, Partitioned):
                continue
            if len(names) == 1:
                index[s] = None
            elif s.column in names:
                index[s] = names.index(s.column)
            else:
                raise ConfigurationError(
                    f"{self.fn.__qualname__}: the partitioned source {s} follows a parameter "
                    f"named {s.column!r}, which the function does not take: name the parameter "
                    f"{s.column!r}, give key= returning the {s.column} value, or give sources= a "
                    f"function of the key"
                )

        def partition_of(p: Partitioned, key: Any) -> object:
            i = index.get(p)
            return untag(key if i is None else key[i])

        return partition_of

    def _arguments(self, ctx: BuildContext) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of the call that ``ctx.key`` (and principal) stands for."""
        if self._key is not None:
            found = self._calls.get((ctx.principal, ctx.key))
            if found is None:
                raise ConfigurationError(
                    f"{self.fn.__qualname__}: no call with key {ctx.key!r} to build it from "
                    "(with key=, a key is built from the arguments of a call of this process)"
                )
            return found
        names = self._names
        values = (ctx.key,) if len(names) == 1 else tuple(ctx.key or ())
        by_name = dict(zip(names, values, strict=True))
        if self.per_principal:
            by_name[PRINCIPAL] = ctx.principal
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, kind in self._kinds.items():
            value = by_name[name]
            if kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(untag(v) for v in value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update((k, untag(v)) for k, v in value)
            elif kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[name] = untag(value)
            else:
                args.append(untag(value))
        return tuple(args), kwargs

    async def _build(self, ctx: BuildContext) -> Any:
        args, kwargs = self._arguments(ctx)
        return await self.fn(*args, **kwargs)

    # -- reading ----------------------------------------------------------------------------

    async def read(self, *args: P.args, **kwargs: P.kwargs) -> Read:
        """The view's :class:`~freshkeep.Read` for this call: status, ETag, revision, body."""
        key, principal = self._key_and_principal(args, kwargs)
        if self._key is not None:
            self._remember((principal, key), args, kwargs)
        return await self.view.get(key, principal=principal)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        read = await self.read(*args, **kwargs)
        value: R = orjson.loads(read.body)
        return value

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry of this call; return whether there was one."""
        key, principal = self._key_and_principal(args, kwargs)
        return self.view.invalidate(key, principal=principal)

    def _remember(self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls = self._calls
        calls[key] = (args, kwargs)
        calls.move_to_end(key)
        if len(calls) > _MAX_CALLS:
            calls.popitem(last=False)

    def __repr__(self) -> str:
        return f"<cached {self.fn.__qualname__} view={self.view.name!r}>"


_NATIVE = frozenset({int, str, type(None)})
"""The types of argument a key holds as they are: JSON and Python equality agree on them."""
_TAGS: dict[type, str] = {}


def tag(value: Any) -> Hashable:
    """``value`` as a part of a key: itself when an ``int``, a ``str`` or ``None``; else the
    pair ``(type name, value)`` (a tuple's items tagged too), so that ``1``, ``True`` and
    ``1.0``, or a ``datetime`` and its ISO text, are different keys in a process and in a
    shared store's JSON."""
    t = type(value)
    if t in _NATIVE:
        return cast(Hashable, value)
    name = _TAGS.get(t)
    if name is None:
        module = t.__module__
        name = _TAGS[t] = t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"
    if t is tuple:
        return (name, tuple(tag(v) for v in value))
    return (name, value)


def untag(part: Any) -> Any:
    """The argument :func:`tag` made ``part`` from (a tuple of tagged items back as a tuple)."""
    if type(part) is not tuple:
        return part
    name, value = part
    if name == "tuple":
        return tuple(untag(v) for v in value)
    return value


def _check_hashable(fn: Callable[..., Any], what: str, value: object) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(
            f"{fn.__qualname__}(): {what} is a {type(value).__name__}, which cannot be part of "
            "a cache key: pass hashable arguments, or give @keeper.cached a key= function"
        ) from None


def cached(
    keeper: Keeper,
    *,
    sources: Iterable[str | Partitioned] | SourcesOf,
    policy: Policy | None = None,
    key: Callable[..., Hashable] | None = None,
    name: str | None = None,
    per_principal: bool = False,
    public: bool = False,
    probe: Probe | None = None,
    version: str = "",
    client_refresh: ClientRefresh | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Cached[P, R]]:
    """A decorator making an async function a :class:`Cached` one on ``keeper``'s view
    ``name`` (default: the function's qualified name); see :meth:`Keeper.cached
    <freshkeep.Keeper.cached>`."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Cached[P, R]:
        return Cached(
            keeper,
            fn,
            sources=sources,
            policy=policy,
            key=key,
            name=name,
            per_principal=per_principal,
            public=public,
            probe=probe,
            version=version,
            client_refresh=client_refresh,
        )

    return decorate
