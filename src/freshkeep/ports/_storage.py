"""The object storage port: content-addressed objects of artifact caches.

An object's id is the SHA-256 of its bytes (hex), so a put is idempotent and an object never
changes once written.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_ID = re.compile(r"^[0-9a-f]{64}$")


def content_id(data: bytes) -> str:
    """The id of an object: the SHA-256 of its bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def is_content_id(value: str) -> bool:
    """Whether ``value`` looks like an object id (64 lowercase hex digits)."""
    return bool(_ID.match(value))


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object found by :meth:`ObjectStorage.list_objects`."""

    id: str
    size: int
    mtime: float
    """Wall-clock seconds of its last write (0 when the storage does not say)."""


class ObjectStorage(ABC):
    """Objects of artifact caches, by ``(cache, object id)``. Errors are raised as
    :class:`~freshkeep.exceptions.StoreError`.

    Optional capabilities, "not supported" in this base: :meth:`presign` answers ``None`` (the
    cache signs a URL of its own route) and :meth:`local_path` answers ``None`` (the route
    streams :meth:`read` instead of sending a file).
    """

    url: str = ""
    """Where the objects are (for messages and the dashboard)."""

    @abstractmethod
    async def put(self, cache: str, object_id: str, data: bytes) -> None:
        """Store ``data`` as ``object_id`` (atomically: readers see all of it or nothing)."""

    @abstractmethod
    async def exists(self, cache: str, object_id: str) -> bool:
        """Whether ``object_id`` is stored."""

    @abstractmethod
    async def read(self, cache: str, object_id: str) -> bytes:
        """The bytes of ``object_id`` (``StoreError`` when absent)."""

    @abstractmethod
    async def delete(self, cache: str, object_ids: Iterable[str]) -> None:
        """Delete objects (an absent one is not an error)."""

    @abstractmethod
    async def list_objects(self, cache: str) -> tuple[list[StoredObject], list[tuple[str, float]]]:
        """Every object of ``cache``, and the (path, mtime) of left-over temporary files."""

    async def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete left-over temporary files by path (the base leaves none)."""
        return None

    async def presign(
        self, cache: str, object_id: str, expires: int, params: Mapping[str, str]
    ) -> str | None:
        """A presigned GET URL valid ``expires`` seconds, or ``None`` (the default: not
        supported)."""
        return None

    def local_path(self, cache: str, object_id: str) -> str | None:
        """The local file of an object, or ``None`` (the default: not a local directory)."""
        return None


__all__ = ["ObjectStorage", "StoredObject", "content_id", "is_content_id"]
