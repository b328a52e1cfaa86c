"""Signed URLs of artifacts on local storage: an HMAC-SHA256 of what the URL grants."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from freshkeep.exceptions import InvalidSignatureError


@dataclass(frozen=True, slots=True)
class Grant:
    """What a signed URL grants: one object of one cache, until ``expires`` (epoch seconds),
    served with ``content_type`` and ``filename`` when given."""

    cache: str
    artifact_id: str
    expires: int
    content_type: str | None = None
    filename: str | None = None

    def message(self) -> bytes:
        """The signed message: every field, newline-separated."""
        parts = (
            self.cache,
            self.artifact_id,
            str(self.expires),
            self.content_type or "",
            self.filename or "",
        )
        return "\n".join(parts).encode()


def sign(secret: bytes, grant: Grant) -> str:
    """The signature of ``grant`` (hex HMAC-SHA256 under ``secret``)."""
    return hmac.new(secret, grant.message(), hashlib.sha256).hexdigest()


def signed_query(secret: bytes, grant: Grant) -> str:
    """The query string of a signed URL: ``expires``, ``sig``, and ``type``/``name`` if set."""
    params = {"expires": str(grant.expires), "sig": sign(secret, grant)}
    if grant.content_type:
        params["type"] = grant.content_type
    if grant.filename:
        params["name"] = grant.filename
    return urlencode(params)


def expiry(now: float, ttl: float) -> int:
    """The whole second at which a URL signed at ``now`` for ``ttl`` seconds expires."""
    return math.ceil(now + ttl)


def verify(
    secret: bytes, cache: str, artifact_id: str, query: Mapping[str, str], now: float
) -> Grant:
    """The grant of a signed URL's path and query, if its signature is valid and it has not
    expired; else raises :class:`~freshkeep.exceptions.InvalidSignatureError` saying why."""
    raw_expires, sig = query.get("expires"), query.get("sig")
    if not raw_expires or not sig:
        raise InvalidSignatureError("the URL has no 'expires' and 'sig' parameters")
    try:
        expires = int(raw_expires)
    except ValueError:
        raise InvalidSignatureError(f"'expires' is not an integer: {raw_expires!r}") from None
    grant = Grant(cache, artifact_id, expires, query.get("type") or None, query.get("name") or None)
    if not hmac.compare_digest(sign(secret, grant), sig):
        raise InvalidSignatureError("the URL's signature does not match")
    if expires <= now:
        raise InvalidSignatureError(f"the URL expired {now - expires:.0f} s ago")
    return grant


__all__ = ["Grant", "expiry", "sign", "signed_query", "verify"]
