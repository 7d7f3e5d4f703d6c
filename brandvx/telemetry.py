"""Logging, Sentry and PostHog wiring. Nothing here may send PII."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import sentry_sdk
from prometheus_client import Histogram

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


GC_PAUSES = Histogram(
    "python_gc_pause_seconds",
    "Time the garbage collector stopped this process, by generation",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
_gc_started = 0.0


def _time_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        GC_PAUSES.labels(str(info.get("generation", -1))).observe(time.perf_counter() - _gc_started)


def freeze_startup_objects() -> None:
    """After startup: keep its long-lived objects out of every later full collection (a full
    collection over them paused streaming for 100+ ms), and time the pauses that remain."""
    gc.collect()
    gc.freeze()
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)
