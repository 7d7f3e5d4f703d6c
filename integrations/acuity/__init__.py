"""Acuity Scheduling: OAuth and API-key connections, appointment sync by date windows, webhooks."""

from integrations.acuity.client import (
    DEFAULT_BASE_URL,
    OAUTH_SCOPE,
    OVERLAP_LOOKBACK,
    AcuityAuth,
    AcuityBasic,
    AcuityBearer,
    AcuityCalendar,
    AcuityClient,
    to_external_appointment,
)
from integrations.acuity.webhooks import (
    APPOINTMENT_ACTIONS,
    SIGNATURE_HEADER,
    AcuityWebhookError,
    parse_webhook,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "APPOINTMENT_ACTIONS",
    "DEFAULT_BASE_URL",
    "OAUTH_SCOPE",
    "OVERLAP_LOOKBACK",
    "SIGNATURE_HEADER",
    "AcuityAuth",
    "AcuityBasic",
    "AcuityBearer",
    "AcuityCalendar",
    "AcuityClient",
    "AcuityWebhookError",
    "parse_webhook",
    "sign_webhook",
    "to_external_appointment",
    "verify_webhook",
]
