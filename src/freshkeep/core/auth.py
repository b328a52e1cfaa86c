"""The admin bearer-token check every freshkeep endpoint shares (health, processors, metrics,
dashboard): pure, no framework."""

from __future__ import annotations

import hmac


def bearer_ok(authorization: str | bytes | None, token: str | bytes | None) -> bool:
    """Whether an ``Authorization`` header value carries ``Bearer <token>``.

    The scheme is case-insensitive, surrounding blanks of the credentials are ignored, and the
    credentials are compared in constant time. No ``token`` (``None`` or empty) never matches:
    an endpoint without a configured token is off, never open.
    """
    if not token or not authorization:
        return False
    raw = authorization.encode("latin-1") if isinstance(authorization, str) else authorization
    expected = token.encode() if isinstance(token, str) else token
    scheme, _, given = raw.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected)


__all__ = ["bearer_ok"]
