"""The :class:`~freshkeep.ports.ObjectStorage` suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from freshkeep.exceptions import StoreError
from freshkeep.ports import ObjectStorage
from freshkeep.ports._storage import content_id


class ObjectStorageSuite:
    """Provide the ``storage`` fixture: an empty :class:`~freshkeep.ports.ObjectStorage`."""

    @pytest.fixture
    async def storage(self) -> AsyncIterator[ObjectStorage]:
        raise NotImplementedError("an ObjectStorageSuite subclass provides `storage`")
        yield  # pragma: no cover

    async def test_it_is_an_object_storage(self, storage: ObjectStorage) -> None:
        assert isinstance(storage, ObjectStorage)

    async def test_put_exists_read(self, storage: ObjectStorage) -> None:
        data = b"pack file \x00\xff" * 100
        oid = content_id(data)
        assert await storage.exists("exports", oid) is False
        await storage.put("exports", oid, data)
        assert await storage.exists("exports", oid) is True
        assert await storage.read("exports", oid) == data
        await storage.put("exports", oid, data)  # content-addressed: idempotent
        assert await storage.read("exports", oid) == data

    async def test_reading_an_absent_object_raises_store_error(
        self, storage: ObjectStorage
    ) -> None:
        with pytest.raises(StoreError):
            await storage.read("exports", content_id(b"never stored"))

    async def test_caches_are_apart_and_listed(self, storage: ObjectStorage) -> None:
        a, b = b"a" * 10, b"b" * 20
        await storage.put("one", content_id(a), a)
        await storage.put("two", content_id(b), b)
        assert await storage.exists("one", content_id(b)) is False
        objects, _ = await storage.list_objects("one")
        assert [(o.id, o.size) for o in objects] == [(content_id(a), 10)]
        objects, _ = await storage.list_objects("two")
        assert [(o.id, o.size) for o in objects] == [(content_id(b), 20)]
        assert (await storage.list_objects("empty")) == ([], [])

    async def test_delete(self, storage: ObjectStorage) -> None:
        blobs = [f"blob {i}".encode() for i in range(3)]
        for blob in blobs:
            await storage.put("c", content_id(blob), blob)
        await storage.delete("c", [content_id(blobs[0]), content_id(blobs[1]), content_id(b"-")])
        objects, _ = await storage.list_objects("c")
        assert [o.id for o in objects] == [content_id(blobs[2])]
        assert await storage.exists("c", content_id(blobs[0])) is False
        await storage.delete("c", [])

    async def test_optional_capabilities(self, storage: ObjectStorage) -> None:
        data = b"signed"
        oid = content_id(data)
        await storage.put("c", oid, data)
        url = await storage.presign("c", oid, 60, {})
        assert url is None or isinstance(url, str)
        path = storage.local_path("c", oid)
        if path is not None:
            with open(path, "rb") as f:
                assert f.read() == data
            assert os.path.isfile(path)
