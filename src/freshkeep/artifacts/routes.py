"""Serving artifacts on local storage at their signed URLs (Starlette).

Mount the routes where each cache's ``url_base`` points (default ``/artifacts/<name>``)::

    app = Starlette(routes=[Mount("/artifacts", routes=artifact_routes(exports))])
    # or, FastAPI: app.mount("/artifacts", artifact_app(exports))

``GET``/``HEAD /<cache>/<artifact id>?expires=…&sig=…`` checks the signature and the expiry
(``403`` with a JSON body otherwise) and serves the file with ``ETag``, ``Last-Modified`` and
HTTP ``Range`` support (``206`` with one range or ``multipart/byteranges``; ``416`` with
``Content-Range: bytes */<size>`` for an unsatisfiable range), through Starlette's
``FileResponse`` (starlette >= 0.39). Objects on S3 are served by S3 itself at presigned URLs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from freshkeep.artifacts._cache import ArtifactCache, _disposition
from freshkeep.artifacts._storage import is_content_id
from freshkeep.exceptions import DuplicateNameError, InvalidSignatureError, missing_extra

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("artifacts", "starlette") from exc


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": detail},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def artifact_routes(*caches: ArtifactCache | Iterable[ArtifactCache]) -> list[Route]:
    """One route, ``/{cache}/{artifact_id}`` (GET and HEAD), serving the objects of
    ``caches`` (on local storage) at the URLs :meth:`ArtifactCache.get` signs."""
    registry: dict[str, ArtifactCache] = {}
    for item in caches:
        for c in [item] if isinstance(item, ArtifactCache) else list(item):
            if c.name in registry:
                raise DuplicateNameError(f"two artifact caches are named {c.name!r}")
            registry[c.name] = c

    async def serve(request: Request) -> Response:
        name = request.path_params["cache"]
        artifact_id = request.path_params["artifact_id"]
        cache = registry.get(name)
        if cache is None or not is_content_id(artifact_id):
            return _error(404, "not-found", f"no artifact {name}/{artifact_id}")
        try:
            grant = cache.verify(artifact_id, request.query_params)
        except InvalidSignatureError as exc:
            return _error(403, "invalid-signature", str(exc))
        path = cache.storage.local_path(name, artifact_id)
        if path is None:  # not a local directory: the storage's own (presigned) URL
            url, _ = await cache.url_for(
                artifact_id, content_type=grant.content_type, filename=grant.filename
            )
            return Response(status_code=307, headers={"Location": url})
        if not os.path.isfile(path):
            return _error(404, "not-found", f"artifact {name}/{artifact_id} is not stored")
        remaining = max(0, int(grant.expires - cache.clock.time()))
        headers = {"Cache-Control": f"private, max-age={remaining}, immutable"}
        if grant.filename:
            headers["Content-Disposition"] = _disposition(grant.filename)
        return FileResponse(
            path,
            media_type=grant.content_type or "application/octet-stream",
            headers=headers,
        )

    return [Route("/{cache}/{artifact_id}", serve, methods=["GET", "HEAD"])]


def artifact_app(*caches: ArtifactCache | Iterable[ArtifactCache]) -> Starlette:
    """A small ASGI app serving :func:`artifact_routes` (mount it at ``/artifacts``)."""
    return Starlette(routes=artifact_routes(*caches))


__all__ = ["artifact_app", "artifact_routes"]
