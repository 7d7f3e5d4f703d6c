"""Acuity webhooks: signature check and the form body.

Acuity signs each notification with ``X-Acuity-Signature``: base64 of HMAC-SHA256 over the raw body,
keyed with the account's API key. The body is ``application/x-www-form-urlencoded`` with ``action``,
``id``, ``calendarID`` and ``appointmentTypeID`` only, so the handler fetches the appointment
(``AcuityClient.appointment``). ``changed`` arrives alongside the other actions for the same edit; since
every action leads to the same fetch-and-upsert, a handler may dedupe on (id, a short time bucket).

Webhooks registered through the API (``POST /api/v1/webhooks``) send ``appointment.scheduled``; ones set
in Acuity's settings send ``scheduled``. ``parse_webhook`` returns both as ``scheduled``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Final
from urllib.parse import parse_qs

__all__ = [
    "APPOINTMENT_ACTIONS",
    "SIGNATURE_HEADER",
    "AcuityWebhookError",
    "parse_webhook",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER: Final = "X-Acuity-Signature"
APPOINTMENT_ACTIONS: Final = frozenset({"scheduled", "rescheduled", "canceled", "changed"})
_MAX_BODY: Final = 16_384


class AcuityWebhookError(ValueError):
    """A webhook body that is not an Acuity notification. The message holds no body content."""


def sign_webhook(*, api_key: str, body: bytes) -> str:
    """The ``X-Acuity-Signature`` value Acuity sends for ``body``."""
    digest = hmac.new(api_key.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_webhook(*, api_key: str, body: bytes, signature: str | None) -> bool:
    """True when ``signature`` is Acuity's signature of exactly these body bytes (constant-time)."""
    if not signature or not api_key:
        return False
    try:
        presented = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = hmac.new(api_key.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(presented, expected)


def parse_webhook(body: bytes) -> tuple[str, str]:
    """``(action, id)`` from a verified body; ``appointment.`` prefixes are dropped from the action.

    For appointment actions (``APPOINTMENT_ACTIONS``) the id is the appointment's; ``order.completed``
    carries an order id. Raises ``AcuityWebhookError`` for anything else.
    """
    if len(body) > _MAX_BODY:
        raise AcuityWebhookError("Acuity webhook body is too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=False, max_num_fields=32)
    except (UnicodeDecodeError, ValueError) as error:
        raise AcuityWebhookError("Acuity webhook body is not a form") from error
    actions, ids = fields.get("action", []), fields.get("id", [])
    if len(actions) != 1 or len(ids) != 1:
        raise AcuityWebhookError("Acuity webhook needs exactly one action and one id")
    action = actions[0].strip().lower().removeprefix("appointment.")
    entity_id = ids[0].strip()
    if not action or not entity_id.isdigit():
        raise AcuityWebhookError("Acuity webhook has an empty action or a non-numeric id")
    return action, entity_id
