"""The record's view of unfinished work: heartbeats, and what was queued or running when a worker
or Redis lost it. Used inside one tenant's transaction (row-level security applies as everywhere)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.model import ChatMessageStatus, JobStatus
from persistence import tables as t


@dataclass(frozen=True)
class UnfinishedJob:
    id: uuid.UUID
    kind: str
    status: JobStatus
    attempts: int
    args: dict[str, Any]


class RecoveryRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def beat_job(self, job_id: uuid.UUID) -> None:
        j = t.jobs.c
        await self._conn.execute(
            update(t.jobs)
            .where(j.id == job_id, j.status == JobStatus.RUNNING.value)
            .values(heartbeat_at=func.now())
        )

    async def beat_reply(self, message_id: uuid.UUID) -> None:
        m = t.askvx_messages.c
        await self._conn.execute(
            update(t.askvx_messages)
            .where(m.id == message_id, m.status == ChatMessageStatus.STREAMING.value)
            .values(heartbeat_at=func.now())
        )

    async def lost_jobs(self, *, queued_for: timedelta, silent_for: timedelta) -> list[UnfinishedJob]:
        """PENDING jobs older than ``queued_for`` (their queue entry may be gone) and RUNNING jobs
        whose worker has not written a heartbeat for ``silent_for`` (it died, or the job crashed)."""
        j = t.jobs.c
        rows = await self._conn.execute(
            select(j.id, j.kind, j.status, j.attempts, j.args).where(
                or_(
                    (j.status == JobStatus.PENDING.value)
                    & (j.created_at < func.now() - queued_for)
                    & j.cancel_requested.is_(False),
                    (j.status == JobStatus.RUNNING.value)
                    & (func.coalesce(j.heartbeat_at, j.updated_at) < func.now() - silent_for),
                )
            )
        )
        return [
            UnfinishedJob(r.id, r.kind, JobStatus(r.status), r.attempts, dict(r.args or {})) for r in rows
        ]

    async def requeue_job(self, job_id: uuid.UUID, message: str) -> bool:
        """A RUNNING job whose worker is gone becomes PENDING again (the next run starts it anew)."""
        j = t.jobs.c
        result = await self._conn.execute(
            update(t.jobs)
            .where(j.id == job_id, j.status == JobStatus.RUNNING.value)
            .values(status=JobStatus.PENDING.value, message=message, heartbeat_at=None, updated_at=func.now())
        )
        return bool(result.rowcount)

    async def queued_replies(self, *, queued_for: timedelta) -> list[uuid.UUID]:
        """Replies STREAMING that no worker ever started (no heartbeat) for ``queued_for``."""
        m = t.askvx_messages.c
        rows = await self._conn.scalars(
            select(m.id).where(
                m.status == ChatMessageStatus.STREAMING.value,
                m.heartbeat_at.is_(None),
                m.created_at < func.now() - queued_for,
            )
        )
        return list(rows.all())

    async def fail_silent_replies(self, *, silent_for: timedelta, error: str) -> list[uuid.UUID]:
        """Replies whose worker stopped writing heartbeats: FAILED (a second run would repeat text)."""
        m = t.askvx_messages.c
        rows = await self._conn.scalars(
            update(t.askvx_messages)
            .where(
                m.status == ChatMessageStatus.STREAMING.value,
                m.heartbeat_at < func.now() - silent_for,
            )
            .values(status=ChatMessageStatus.FAILED.value, error=error, completed_at=func.now())
            .returning(m.id)
        )
        return list(rows.all())
