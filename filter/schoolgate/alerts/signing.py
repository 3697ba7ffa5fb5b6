"""Webhook signatures: HMAC-SHA256 over "<timestamp>." + body, sent as `v1=<hex>`.

The timestamp is signed with the body, so a receiver that checks the skew rejects replays of an
old request; within the skew window it de-duplicates by the `X-Schoolgate-Alert-Id` header.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Schoolgate-Signature"
TIMESTAMP_HEADER = "X-Schoolgate-Timestamp"
ALERT_ID_HEADER = "X-Schoolgate-Alert-Id"
SCHEME = "v1"


def _key(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def signature(secret: bytes | str, timestamp: int | str, body: bytes) -> str:
    """The header value for a body sent at `timestamp` (whole Unix seconds)."""
    message = str(timestamp).encode("ascii") + b"." + body
    return f"{SCHEME}=" + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: bytes | str,
    timestamp: int | str,
    body: bytes,
    signature_header: str,
    max_skew_s: float = 300.0,
    *,
    now: float | None = None,
) -> bool:
    """True if `signature_header` signs `body` at `timestamp` with `secret`, and the timestamp
    is within `max_skew_s` of now. Never raises for malformed input (it is simply not valid).

    `body` must be the raw request bytes, before any JSON parsing.
    """
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > max_skew_s:
        return False
    expected = signature(secret, sent_at, body).encode("ascii")
    # A header may carry several schemes ("v1=..., v2=...") once keys or algorithms rotate.
    candidates = [part.strip().encode("utf-8", "replace") for part in signature_header.split(",")]
    return any(hmac.compare_digest(expected, c) for c in candidates)
