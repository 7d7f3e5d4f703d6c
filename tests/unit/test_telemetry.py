"""Process telemetry: garbage-collector pauses reach /metrics."""

from __future__ import annotations

import gc
import re

from prometheus_client import generate_latest

from brandvx.telemetry import freeze_startup_objects


def pause_count(generation: int) -> float:
    text = generate_latest().decode()
    found = re.search(rf'^python_gc_pause_seconds_count{{generation="{generation}"}} (\S+)$', text, re.M)
    assert found, "python_gc_pause_seconds is not exported"
    return float(found.group(1))


def test_collections_are_timed_once_installed() -> None:
    freeze_startup_objects()
    freeze_startup_objects()  # idempotent: one callback, one freeze per process
    before = pause_count(2)
    gc.collect()
    assert pause_count(2) == before + 1
    assert [getattr(cb, "__name__", "") for cb in gc.callbacks].count("_time_gc") == 1
