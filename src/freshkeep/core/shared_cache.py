"""Headers for shared HTTP caches (a CDN, nginx, Varnish), bounded by a view's own policy.

By default a view's response says ``Cache-Control: no-cache`` with a weak ``ETag``: any cache
may keep it but must ask the origin before each use, and the origin answers ``304`` without a
build while the sources have not moved. A public view may opt in to let a shared cache serve
its copy without asking, with :class:`SharedCache`::

    keeper.view("summary", build, sources=[...], public=True,
                policy=Policy.swr(30, stale_if_error=600),
                shared_cache=SharedCache(s_maxage=10, stale_while_revalidate=20,
                                         stale_if_error=300))

A proxy's copy cannot see a write: once it leaves the origin it is as stale as the time it is
kept. So the directives spend the staleness the view's policy already allows, never more:

- ``s_maxage + stale_while_revalidate <= max_stale`` (and ``<= max_age`` when the policy caps
  ages): a ``strict`` policy (``max_stale=0``) allows neither, since a strict view never serves
  a value it knows is stale;
- ``s_maxage + stale_if_error <= stale_if_error`` of the policy: the proxy serves its copy
  after an origin error no longer than the origin itself would.

Sections with their own policies bound it too (the tightest wins). Only responses whose value
matched the revisions the origin knew (``hit``, ``miss``, ``section`` when no section may be
served stale beside those rebuilt, and the ``304`` that revalidates one) carry the directives;
a ``stale`` or ``error-stale`` response is already behind its sources, so it says ``no-cache``
and a proxy revalidates it at its next use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from freshkeep.core.policy import Policy
from freshkeep.exceptions import ConfigurationError


@dataclass(frozen=True, slots=True)
class SharedCache:
    """The ``Cache-Control`` directives a public view grants shared caches, in whole seconds.

    - ``s_maxage``: a shared cache serves its copy without asking for this long;
    - ``stale_while_revalidate``: then serves it while it revalidates in the background
      (RFC 5861), for this long;
    - ``stale_if_error``: serves it when the origin fails (a ``5xx``) for this long past its
      freshness.

    Browsers are told ``max-age=0``: they revalidate with the ETag as before (one that honours
    ``stale-while-revalidate`` may use its copy for that window, within the same bound).
    """

    s_maxage: int = 0
    stale_while_revalidate: int = 0
    stale_if_error: int = 0

    def __post_init__(self) -> None:
        for name in ("s_maxage", "stale_while_revalidate", "stale_if_error"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(
                    f"SharedCache {name} must be a whole number of seconds >= 0, not {value!r}"
                )

    def check(self, view: str, policies: Iterable[Policy]) -> None:
        """Raise :class:`~freshkeep.exceptions.ConfigurationError` when a directive would let
        a shared cache serve ``view`` beyond one of its ``policies`` (the view's and its
        sections')."""
        for policy in policies:
            stale = self.s_maxage + self.stale_while_revalidate
            if stale > policy.max_stale:
                raise ConfigurationError(
                    f"view {view!r}: s_maxage + stale_while_revalidate ({stale}s) exceeds the "
                    f"policy's max_stale ({policy.max_stale:g}s, mode {policy.mode}): a shared "
                    "cache would serve a copy staler than the view itself may"
                )
            if policy.max_age is not None and stale > policy.max_age:
                raise ConfigurationError(
                    f"view {view!r}: s_maxage + stale_while_revalidate ({stale}s) exceeds the "
                    f"policy's max_age ({policy.max_age:g}s)"
                )
            on_error = self.s_maxage + self.stale_if_error
            if self.stale_if_error and on_error > policy.stale_if_error:
                raise ConfigurationError(
                    f"view {view!r}: s_maxage + stale_if_error ({on_error}s) exceeds the "
                    f"policy's stale_if_error ({policy.stale_if_error:g}s)"
                )

    @property
    def cache_control(self) -> str:
        """The ``Cache-Control`` value of a response whose value was current."""
        parts = ["public", "max-age=0", f"s-maxage={self.s_maxage}"]
        if self.stale_while_revalidate:
            parts.append(f"stale-while-revalidate={self.stale_while_revalidate}")
        if self.stale_if_error:
            parts.append(f"stale-if-error={self.stale_if_error}")
        return ", ".join(parts)

    @classmethod
    def within(cls, policy: Policy, *, share: float = 1.0) -> SharedCache:
        """The largest directives ``policy`` allows, scaled by ``share`` (0 to 1): half of
        ``max_stale`` fresh and half while revalidating, and what is left of
        ``stale_if_error`` after that for errors. A policy whose bounds are infinite raises
        :class:`~freshkeep.exceptions.ConfigurationError`."""
        if not 0 < share <= 1 or math.isnan(share):
            raise ConfigurationError(f"share must be in (0, 1], not {share!r}")
        budget = (
            policy.max_stale if policy.max_age is None else min(policy.max_stale, policy.max_age)
        )
        if math.isinf(budget) or math.isinf(policy.stale_if_error):
            raise ConfigurationError(
                f"SharedCache.within({policy!r}): the policy sets no finite bound on staleness "
                "to share; give SharedCache(s_maxage=..., stale_while_revalidate=..., "
                "stale_if_error=...) in whole seconds"
            )
        budget *= share
        s_maxage = math.floor(budget / 2)
        swr = math.floor(budget - s_maxage)
        on_error = max(0, math.floor(policy.stale_if_error * share) - s_maxage)
        return cls(s_maxage, swr, on_error)


__all__ = ["SharedCache"]


def check_grant(view: str, shared: object, *, public: bool, policies: Iterable[Policy]) -> None:
    """Raise :class:`~freshkeep.exceptions.ConfigurationError` unless ``shared`` is a
    :class:`SharedCache` that ``view`` may grant: the view is public, and no directive lets a
    shared cache serve it beyond one of its ``policies`` (:meth:`SharedCache.check`)."""
    if not isinstance(shared, SharedCache):
        raise ConfigurationError(
            f"view {view!r}: shared_cache must be a SharedCache, not {shared!r}"
        )
    if not public:
        raise ConfigurationError(
            f"view {view!r}: shared_cache needs public=True (a shared cache would give one "
            "reader's response to another)"
        )
    shared.check(view, policies)
