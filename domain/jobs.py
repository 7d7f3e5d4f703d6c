"""Jobs as the UI sees them: a row per job with status and progress (ARQ does the running)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from domain.access import require_read
from domain.errors import NotFound
from domain.model import Actor, Job, JobStatus
from domain.ports import UnitOfWork


class JobQueue(Protocol):
    """Enqueue after the transaction that created the work has committed."""

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> None: ...


async def create_job(
    uow: UnitOfWork, tenant_id: uuid.UUID, *, kind: str, dedupe_key: str | None = None
) -> Job:
    """A PENDING job, or the PENDING/RUNNING one with the same dedupe key (enqueue is idempotent)."""
    if dedupe_key is not None:
        existing = await uow.jobs.active_with_key(dedupe_key)
        if existing is not None:
            return existing
    return await uow.jobs.add(uuid.uuid4(), tenant_id=tenant_id, kind=kind, dedupe_key=dedupe_key)


async def get_job(uow: UnitOfWork, actor: Actor, job_id: uuid.UUID) -> Job:
    require_read(actor)
    job = await uow.jobs.get(job_id)
    if job is None:
        raise NotFound("Job not found", field=["id"])
    return job


async def start(uow: UnitOfWork, job_id: uuid.UUID, message: str) -> Job | None:
    """None when the job is already finished (a repeated delivery): do nothing then."""
    job = await uow.jobs.get(job_id)
    if job is None or job.status.finished:
        return None
    return await uow.jobs.update(job_id, status=JobStatus.RUNNING, progress=0.05, message=message)


async def progress(uow: UnitOfWork, job_id: uuid.UUID, fraction: float, message: str) -> Job | None:
    return await uow.jobs.update(job_id, progress=max(0.0, min(1.0, fraction)), message=message)


async def complete(uow: UnitOfWork, job_id: uuid.UUID, result: dict[str, Any], message: str) -> Job | None:
    return await uow.jobs.update(
        job_id, status=JobStatus.COMPLETED, progress=1.0, message=message, result=result
    )


async def fail(uow: UnitOfWork, job_id: uuid.UUID, error: str) -> Job | None:
    return await uow.jobs.update(job_id, status=JobStatus.FAILED, error=error, message="Failed")
