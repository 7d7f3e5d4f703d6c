"""Square webhook signatures: ``x-square-hmacsha256-signature`` is base64(HMAC-SHA256(signature key,
notification URL + raw body)). Use the notification URL configured in Square's dashboard, not the
URL the request arrived at behind a proxy, and the body bytes exactly as received."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

__all__ = ["SIGNATURE_HEADER", "sign", "verify_webhook"]

SIGNATURE_HEADER: Final = "x-square-hmacsha256-signature"


def sign(*, signature_key: str, notification_url: str, body: bytes) -> str:
    digest = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_webhook(*, signature_key: str, notification_url: str, body: bytes, signature: str | None) -> bool:
    if not signature or not signature_key:
        return False
    expected = sign(signature_key=signature_key, notification_url=notification_url, body=body)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8", "replace"))
