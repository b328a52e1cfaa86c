"""Completing a fetched value item by item: the keys a fetch left out, backfilled from
``defaults``; the fields an item lacks, from its default and from ``fallback_item``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from freshkeep.exceptions import ConfigurationError

FallbackItem = Callable[[Any, Any], Any]
"""``fallback_item(key, item) -> item``: the item to keep for ``key`` (the item itself, or a
completed copy when it lacks a field the callers need); sync."""


@dataclass(frozen=True, slots=True)
class Completed:
    """A fetched value after completion, and what completion changed."""

    value: Any
    backfilled: frozenset[Any]
    """Keys the fetch left out, taken from ``defaults``."""
    filled: frozenset[Any]
    """Keys whose item was merged with its default or replaced by ``fallback_item``."""


def check_completion(
    name: str, defaults: Mapping[Any, Any] | None, fallback_item: FallbackItem | None
) -> dict[Any, Any] | None:
    """The remote's ``defaults`` (a copy) after checking both arguments; raises
    :class:`ConfigurationError` saying what to give."""
    if defaults is not None and not isinstance(defaults, Mapping):
        raise ConfigurationError(
            f"remote {name!r}: defaults must be a mapping of key -> default item, "
            f"not {type(defaults).__name__}"
        )
    if fallback_item is not None:
        call = getattr(fallback_item, "__call__", None)  # noqa: B004 - an async __call__
        if not callable(fallback_item):
            raise ConfigurationError(f"remote {name!r}: fallback_item must be callable")
        if inspect.iscoroutinefunction(fallback_item) or inspect.iscoroutinefunction(call):
            raise ConfigurationError(
                f"remote {name!r}: fallback_item must be a plain function (key, item) -> item, "
                "not async"
            )
    return None if defaults is None else dict(defaults)


def complete(
    name: str,
    value: Any,
    defaults: Mapping[Any, Any] | None,
    fallback_item: FallbackItem | None,
) -> Completed:
    """``value`` (a mapping of key -> item) completed, as a new dict:

    1. an item whose key has a default, both mappings, gets the default's fields it lacks
       (the fetched fields win);
    2. every key of ``defaults`` the value lacks is added with its default item;
    3. ``fallback_item(key, item)`` runs on every item, and its result is kept.

    A value that is not a mapping raises :class:`TypeError` (the fetch counts as failed).
    """
    if not isinstance(value, Mapping):
        raise TypeError(
            f"remote {name!r}: with defaults= or fallback_item=, a fetch must return a mapping "
            f"of key -> item, not {type(value).__name__} (key the items in fetch, e.g. "
            "{s['id']: s for s in states})"
        )
    base = defaults or {}
    out: dict[Any, Any] = {}
    filled: set[Any] = set()
    for key, item in value.items():
        default = base.get(key)
        if isinstance(default, Mapping) and isinstance(item, Mapping):
            missing = {f: v for f, v in default.items() if f not in item}
            if missing:
                item = {**missing, **item}
                filled.add(key)
        out[key] = item
    backfilled = frozenset(k for k in base if k not in out)
    for key, default in base.items():
        if key in backfilled:
            out[key] = default
    if fallback_item is not None:
        for key, item in out.items():
            kept = fallback_item(key, item)
            if kept is not item:
                out[key] = kept
                filled.add(key)
    return Completed(out, backfilled, frozenset(filled - backfilled))
