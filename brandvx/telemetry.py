"""Logging, Sentry and PostHog wiring. Nothing here may send PII."""

from __future__ import annotations

import bisect
import gc
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any, Final

import sentry_sdk
from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from brandvx.settings import Settings

_SENSITIVE_HEADERS = {"authorization", "cookie", "x-api-key"}


class AccessLogWithoutQuery(logging.Filter):
    """uvicorn's access log, with paths only: query strings carry OAuth ``code``/``state`` and
    whatever else a client puts in a URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogWithoutQuery) for f in access.filters):
        access.addFilter(AccessLogWithoutQuery())
    # httpx logs every provider request's full URL at INFO (query strings included).
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


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


GC_PAUSE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# Plain lists, not prometheus_client metrics: the callback runs inside whatever allocation set off a
# collection, possibly while that thread holds a metric's lock (a /metrics scrape copying a dict),
# and taking that lock again there would hang the thread.
_GC_LABELS: Final = ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25")  # "le" values
_gc_counts = [[0] * (len(GC_PAUSE_BUCKETS) + 1) for _ in range(3)]  # per generation, per bucket, +Inf
_gc_sums = [0.0, 0.0, 0.0]
_gc_started = 0.0
_frozen = False


def _time_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    elapsed = time.perf_counter() - _gc_started
    generation = min(max(info.get("generation", 2), 0), 2)
    _gc_counts[generation][bisect.bisect_left(GC_PAUSE_BUCKETS, elapsed)] += 1
    _gc_sums[generation] += elapsed


class _GcPauses(Collector):
    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "python_gc_pause_seconds",
            "Time the garbage collector stopped this process, by generation",
            labels=["generation"],
        )
        for generation in range(3):
            cumulative = list(itertools.accumulate(_gc_counts[generation]))
            bounds = zip(_GC_LABELS, cumulative, strict=False)
            buckets = [(label, float(count)) for label, count in bounds]
            family.add_metric(
                [str(generation)], [*buckets, ("+Inf", float(cumulative[-1]))], _gc_sums[generation]
            )
        yield family


REGISTRY.register(_GcPauses())


def freeze_startup_objects() -> None:
    """After startup: keep its long-lived objects out of every later full collection (a full
    collection over them paused streaming for 100+ ms), and time the pauses that remain."""
    global _frozen
    if _frozen:
        return  # once per process: a later call (an inline worker) would freeze requests in flight
    _frozen = True
    gc.collect()
    gc.freeze()
    gc.callbacks.append(_time_gc)
