"""The hub's admin route for its topic exports: collect them now, one topic's or all.

- ``POST /admin/exports/gc?topic=ID``: run the export cache's GC for topic ``ID``'s exports
  only (its expired revisions and the objects only they used: ``freshkeep gc --prefix
  'ID@'``); without ``topic``, for the whole cache. ``200`` with the counts of
  :meth:`~freshkeep.artifacts.ArtifactCache.gc`, the topic and the key prefix; ``503`` when
  the index or the storage fails.

Like the processor routes, it needs ``Authorization: Bearer $FRESHKEEP_ADMIN_TOKEN``: ``401``
without it or with a wrong one, ``403`` when no admin token is configured (the route is off).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from freshkeep.demo.exports import TopicExports, export_prefix
from freshkeep.exceptions import StoreError
from freshkeep.processing.http import admin_denied, secret_value

if TYPE_CHECKING:
    from pydantic import SecretStr

log = logging.getLogger("freshkeep.demo")

PATH = "/admin/exports/gc"
"""Where :func:`export_admin_router` serves the GC of the hub's exports."""


def export_admin_router(exports: TopicExports, *, admin_token: str | SecretStr | None) -> APIRouter:
    """The router of ``POST /admin/exports/gc`` for ``exports`` (see the module docstring)."""
    token = secret_value(admin_token)
    router = APIRouter(tags=["admin"])

    @router.post(
        PATH,
        response_class=Response,
        responses={
            200: {"content": {"application/json": {}}, "description": "what the GC deleted"},
            401: {"description": "no or a wrong admin bearer token"},
            403: {"description": "no admin token is configured: the route is off"},
            503: {"description": "the artifact index or storage failed"},
        },
    )
    async def collect_exports(
        request: Request,
        topic: Annotated[
            int | None, Query(ge=0, description="Collect this topic's exports only")
        ] = None,
    ) -> Response:
        """Collect the topic exports now: one topic's expired revisions and the objects only
        they used (``topic``), or the whole cache's expired rows and unreferenced objects."""
        if (denied := admin_denied(request, token)) is not None:
            return denied
        try:
            counts = await exports.collect(topic)
        except StoreError as exc:
            error_id = uuid.uuid4().hex[:16]  # the error (paths, SQL) goes to the log only
            log.error("the export GC failed (error id %s): %s", error_id, exc, exc_info=exc)
            return JSONResponse(
                {"detail": "the export GC failed; see the server log", "error_id": error_id},
                status_code=503,
                headers={"Cache-Control": "no-store"},
            )
        body: dict[str, Any] = {
            "cache": exports.cache.name,
            "topic": topic,
            "prefix": None if topic is None else export_prefix(topic),
            **counts,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return router
