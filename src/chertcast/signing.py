"""Chert's HMAC request signature, as the client sends it (the sandbox checks it with its own code)."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: str, timestamp: int, raw_body: bytes) -> str:
    """The ``x-chert-signature`` value: ``v1,<ts>,<hex HMAC-SHA256 of "<ts>.<raw body>">``.

    The key is the secret string's UTF-8 bytes, as in the documentation's samples.
    """
    message = str(timestamp).encode() + b"." + raw_body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"v1,{timestamp},{digest}"
