"""Content-addressed object storage through fsspec: a local directory or S3-compatible storage.

An object's id is the SHA-256 of its bytes (hex); it lives at ``<root>/<cache>/<id[:2]>/<id>``.
Local writes are atomic (a temporary name in the same directory, then a rename); an S3 ``PUT``
(or a completed multipart upload) is atomic by itself. Every call runs in a worker thread, so
the event loop never blocks on the filesystem or the network.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from freshkeep.exceptions import ConfigurationError, StoreError, missing_extra
from freshkeep.ports._storage import ObjectStorage, StoredObject, content_id, is_content_id

try:
    import fsspec
    from fsspec.implementations.local import LocalFileSystem
except ImportError as exc:  # pragma: no cover - exercised by the no-extras import test
    raise missing_extra("artifacts", "fsspec") from exc

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_TMP = ".tmp-"


def _mtime(info: Mapping[str, Any]) -> float:
    for name in ("mtime", "LastModified", "last_modified", "created"):
        value = info.get(name)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return 0.0


class FsspecStorage(ObjectStorage):
    """The :class:`~freshkeep.ports.ObjectStorage` of artifact caches under one fsspec URL.

    ``url`` is a local directory (``/var/lib/app/artifacts``, ``file:///…``) or any fsspec URL
    (``s3://bucket/prefix`` with s3fs; ``storage_options`` go to the filesystem, e.g.
    ``{"endpoint_url": …, "key": …, "secret": …}`` for an S3-compatible server). Errors of the
    filesystem are raised as :class:`~freshkeep.exceptions.StoreError`.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"artifact storage URL must be a non-empty string: {url!r}")
        try:
            fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as exc:
            raise ConfigurationError(f"artifact storage {url!r}: {exc}") from exc
        self.url = url
        self.fs: Any = fs
        self.local = isinstance(fs, LocalFileSystem)
        self.root = str(root).rstrip("/")
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:
        return f"FsspecStorage({self.url!r})"

    def path(self, cache: str, object_id: str) -> str:
        """Where the object ``object_id`` of ``cache`` is stored."""
        if not _NAME.match(cache) or not is_content_id(object_id):
            raise ValueError(f"not a cache name and object id: {cache!r}, {object_id!r}")
        return f"{self.root}/{cache}/{object_id[:2]}/{object_id}"

    async def put(self, cache: str, object_id: str, data: bytes) -> None:
        """Store ``data`` as ``object_id`` (atomically: readers see all of it or nothing)."""
        path = self.path(cache, object_id)
        await self._call(self._put_sync, path, data, what=f"write {object_id}")

    def _put_sync(self, path: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/{_TMP}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)  # atomic on POSIX: the name appears with every byte
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    async def exists(self, cache: str, object_id: str) -> bool:
        """Whether the object exists."""
        path = self.path(cache, object_id)
        if self.local:
            return await asyncio.to_thread(os.path.isfile, path)
        return bool(await self._call(self._exists_sync, path, what=f"check {object_id}"))

    def _exists_sync(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    async def read(self, cache: str, object_id: str) -> bytes:
        """The bytes of an object (raises ``StoreError`` if it is missing)."""
        path = self.path(cache, object_id)
        data = await self._call(self.fs.cat_file, path, what=f"read {object_id}")
        return bytes(data)

    async def delete(self, cache: str, object_ids: Iterable[str]) -> None:
        """Delete objects; ids that do not exist are ignored."""
        paths = [self.path(cache, i) for i in object_ids]
        if paths:
            await self._call(self._delete_sync, paths, what=f"delete {len(paths)} objects")

    def _delete_sync(self, paths: Sequence[str]) -> None:
        if self.local:
            for p in paths:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            return
        try:
            self.fs.rm(list(paths))
        except FileNotFoundError:  # some are gone already: delete the others one by one
            for p in paths:
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:
                    pass
        self.fs.invalidate_cache()

    async def list_objects(self, cache: str) -> tuple[list[StoredObject], list[tuple[str, float]]]:
        """Every object of ``cache``, and the (path, mtime) of left-over temporary files."""
        found: tuple[list[StoredObject], list[tuple[str, float]]]
        found = await self._call(self._list_sync, cache, what=f"list {cache}")
        return found

    def _list_sync(self, cache: str) -> tuple[list[StoredObject], list[tuple[str, float]]]:
        base = f"{self.root}/{cache}"
        objects: list[StoredObject] = []
        temps: list[tuple[str, float]] = []
        if self.local:
            if not os.path.isdir(base):
                return objects, temps
            for directory, _, names in os.walk(base):
                for name in names:
                    full = os.path.join(directory, name)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    if name.startswith(_TMP):
                        temps.append((full, st.st_mtime))
                    elif is_content_id(name):
                        objects.append(StoredObject(name, st.st_size, st.st_mtime))
            return objects, temps
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return objects, temps
        for path, info in found.items():
            name = str(path).rsplit("/", 1)[-1]
            if is_content_id(name):
                objects.append(StoredObject(name, int(info.get("size") or 0), _mtime(info)))
        return objects, temps

    async def delete_paths(self, paths: Sequence[str]) -> None:
        """Delete files by path (left-over temporary files)."""
        if paths:
            await self._call(self._delete_sync, paths, what=f"delete {len(paths)} files")

    async def presign(
        self, cache: str, object_id: str, expires: int, params: Mapping[str, str]
    ) -> str | None:
        """A presigned GET URL valid ``expires`` seconds (S3), or ``None`` where the storage
        cannot sign URLs (a local directory: the cache signs a URL of its own route)."""
        if self.local:
            return None
        path = self.path(cache, object_id)
        try:
            return str(
                await self._call(
                    self.fs.sign, path, expiration=expires, what=f"sign {object_id}", **params
                )
            )
        except StoreError as exc:
            if isinstance(exc.__cause__, NotImplementedError):
                return None
            raise

    def local_path(self, cache: str, object_id: str) -> str | None:
        """The file of an object on local storage (``None`` on another filesystem)."""
        return self.path(cache, object_id) if self.local else None

    async def _call(self, fn: Any, *args: Any, what: str, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except Exception as exc:
            raise StoreError(f"artifact storage {self.url!r}: cannot {what}: {exc!r}") from exc


__all__ = ["FsspecStorage", "ObjectStorage", "StoredObject", "content_id", "is_content_id"]
