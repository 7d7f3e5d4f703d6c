"""Logging, Sentry and PostHog wiring. Nothing here may send PII."""

from __future__ import annotations

import logging
from typing import Any

import sentry_sdk

from brandvx.settings import Settings

_SENSITIVE_HEADERS = {"authorization", "cookie", "x-api-key"}


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _scrub(event: Any, hint: Any) -> Any:
    request = event.get("request") or {}
    headers = request.get("headers") or {}
    for name in list(headers):
        if name.lower() in _SENSITIVE_HEADERS:
            headers[name] = "[Filtered]"
    request.pop("data", None)  # GraphQL variables can hold contact details
    request.pop("cookies", None)
    event.pop("user", None)
    return event


def configure_sentry(settings: Settings) -> bool:
    if not settings.sentry_dsn:
        return False
    from sentry_sdk.integrations.strawberry import StrawberryIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.env.value,
        send_default_pii=False,
        traces_sample_rate=0.0,
        before_send=_scrub,
        # Its per-field spans are costly and it reports errors we already mask and report ourselves.
        disabled_integrations=[StrawberryIntegration()],
    )
    return True
