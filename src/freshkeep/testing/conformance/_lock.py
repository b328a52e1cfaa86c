"""The :class:`~freshkeep.ports.Lock` suite."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from freshkeep.exceptions import LockBusy
from freshkeep.ports import Lock


class LockSuite:
    """Provide the ``lock`` fixture; override ``other`` with a second lock on the same
    backend as another instance would hold it (by default, ``lock`` itself). A backend whose
    leases expire is waited on with :meth:`pass_time` (override it with a fake clock)."""

    @pytest.fixture
    async def lock(self) -> AsyncIterator[Lock]:
        raise NotImplementedError("a LockSuite subclass provides the `lock` fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def other(self, lock: Lock) -> Lock:
        return lock

    @pytest.fixture
    def name(self) -> str:
        return f"conformance-{uuid.uuid4().hex[:8]}"

    async def pass_time(self, lock: Lock, seconds: float) -> None:
        """Let ``seconds`` pass for the backend's leases."""
        await asyncio.sleep(seconds)

    async def test_it_is_a_lock(self, lock: Lock) -> None:
        assert isinstance(lock, Lock)

    async def test_a_lock_is_exclusive(self, lock: Lock, other: Lock, name: str) -> None:
        token = await lock.acquire(name, 30.0)
        assert token is not None
        assert await other.acquire(name, 30.0) is None
        assert await lock.acquire(name, 30.0) is None
        assert await lock.acquire(name + "-b", 30.0) is not None  # names are independent
        assert await lock.release(name, token) is True
        again = await other.acquire(name, 30.0)
        assert again is not None
        assert await other.release(name, again) is True

    async def test_only_the_holders_token_releases_or_extends(
        self, lock: Lock, other: Lock, name: str
    ) -> None:
        token = await lock.acquire(name, 30.0)
        assert token is not None
        assert await other.release(name, "not-the-token") is False
        assert await other.extend(name, "not-the-token", 30.0) is False
        assert await lock.extend(name, token, 30.0) is True
        assert await other.acquire(name, 30.0) is None
        assert await lock.release(name, token) is True
        assert await lock.release(name, token) is False  # released already
        assert await lock.extend(name, token, 30.0) is False

    async def test_a_lease_expires(self, lock: Lock, other: Lock, name: str) -> None:
        if not lock.leases_expire:
            pytest.skip(f"{type(lock).__name__} holds a lock as long as its holder lives")
        token = await lock.acquire(name, 0.3)
        assert token is not None
        await self.pass_time(lock, 0.6)
        taken = await other.acquire(name, 30.0)
        assert taken is not None  # the lease ended: another holder took it
        assert await lock.release(name, token) is False  # the late holder cannot release it
        assert await lock.extend(name, token, 30.0) is False
        assert await other.release(name, taken) is True

    async def test_extend_keeps_a_lease_alive(self, lock: Lock, other: Lock, name: str) -> None:
        if not lock.leases_expire:
            pytest.skip(f"{type(lock).__name__} holds a lock as long as its holder lives")
        token = await lock.acquire(name, 0.5)
        assert token is not None
        await self.pass_time(lock, 0.3)
        assert await lock.extend(name, token, 30.0) is True
        await self.pass_time(lock, 0.4)
        assert await other.acquire(name, 30.0) is None
        assert await lock.release(name, token) is True

    async def test_hold_raises_lock_busy_and_releases_on_error(
        self, lock: Lock, other: Lock, name: str
    ) -> None:
        async with lock.hold(name, 30.0) as token:
            assert isinstance(token, str)
            with pytest.raises(LockBusy) as busy:
                async with other.hold(name, 30.0):
                    pass  # pragma: no cover
            assert busy.value.name == name
        with pytest.raises(RuntimeError):
            async with lock.hold(name, 30.0):
                raise RuntimeError("the body failed")
        taken = await other.acquire(name, 30.0)  # released both times
        assert taken is not None
        assert await other.release(name, taken)
