"""The hub's admin route for its cached views: drop an entry, or one section of it, now.

- ``POST /admin/views/{view}/invalidate?topic=ID&section=NAME`` drops the entry of ``view``
  (``summary``, or ``topic_summary`` with ``topic``), or only its section ``NAME``
  (:meth:`View.invalidate <freshkeep.views.View.invalidate>`): the next read rebuilds what was
  dropped, in line (``section`` when one section went, ``miss`` for the whole entry).
  ``200`` with what was dropped; ``404`` for an unknown view; ``422`` for an unknown section,
  or a ``topic`` missing for (or given to) a view that does (not) take one.

Like the other admin routes, it needs ``Authorization: Bearer $FRESHKEEP_ADMIN_TOKEN``: ``401``
without it or with a wrong one, ``403`` when no admin token is configured (the route is off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from freshkeep.exceptions import ConfigurationError
from freshkeep.processing.http import admin_denied, secret_value

if TYPE_CHECKING:
    from pydantic import SecretStr

    from freshkeep.views import View

PATH = "/admin/views/{view}/invalidate"
"""Where :func:`cache_admin_router` serves the invalidation of the hub's views."""

MAX_ID = 2**31 - 1


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def cache_admin_router(
    views: dict[str, View], keyed: frozenset[str], *, admin_token: str | SecretStr | None
) -> APIRouter:
    """The router of ``POST /admin/views/{view}/invalidate`` for ``views`` (by name; those in
    ``keyed`` take a topic id as their key)."""
    token = secret_value(admin_token)
    router = APIRouter(tags=["admin"])

    @router.post(
        PATH,
        response_class=Response,
        responses={
            200: {"content": {"application/json": {}}, "description": "what was dropped"},
            401: {"description": "no or a wrong admin bearer token"},
            403: {"description": "no admin token is configured: the route is off"},
            404: {"description": "no such view"},
            422: {"description": "an unknown section, or a topic missing or not taken"},
        },
    )
    async def invalidate_view(
        request: Request,
        view: Annotated[str, Path(description="summary or topic_summary", max_length=100)],
        topic: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="The topic, for topic_summary")
        ] = None,
        section: Annotated[
            str | None, Query(max_length=100, description="Drop this section only")
        ] = None,
    ) -> Response:
        """Drop a view's entry (or one section of it): the next read rebuilds it in line."""
        if (denied := admin_denied(request, token)) is not None:
            return denied
        found = views.get(view)
        if found is None:
            return _json({"detail": f"no view {view!r}", "views": sorted(views)}, 404)
        if (view in keyed) != (topic is not None):
            need = "needs ?topic=ID" if view in keyed else "takes no topic"
            return _json({"detail": f"view {view!r} {need}"}, 422)
        try:
            dropped = found.invalidate(topic, section=section)
        except ConfigurationError as exc:
            return _json({"detail": str(exc), "sections": list(found.sections)}, 422)
        return _json({"view": view, "topic": topic, "section": section, "dropped": dropped})

    return router
