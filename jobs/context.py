"""What a job gets: the worker's long-lived clients, built by the composition root at startup."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from domain.ai import Analytics, ChatModel
from domain.contacts import PiiVault
from domain.jobs import JobQueue
from domain.sync import ProviderRegistry
from persistence.db import Database
from persistence.events import EventStreams


@dataclass(frozen=True)
class JobSettings:
    ai_timeout_seconds: float
    askvx_retention_days: int
    sync_past_days: int = 30
    sync_future_days: int = 180
    low_stock_default: int = 5


@dataclass
class WorkerRuntime:
    db: Database
    events: EventStreams
    model: ChatModel
    analytics: Analytics
    queue: JobQueue
    settings: JobSettings
    vault: PiiVault
    providers: ProviderRegistry
    close: Callable[[], Awaitable[None]]


class WorkerContext(TypedDict, total=False):
    redis: Any  # ARQ's own pool
    runtime: WorkerRuntime
    heartbeat_key: str
    worker_id: str
    job_try: int
    relay_task: asyncio.Task[None]
