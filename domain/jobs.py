"""Jobs as the UI sees them: a row per job with status and progress (ARQ does the running)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from domain.access import require_read, require_write
from domain.connections import NotConnected
from domain.errors import InvalidInput, NotFound
from domain.model import Actor, Job, JobStatus, Provider
from domain.pagination import Page, PageRequest
from domain.ports import UnitOfWork


class JobEvents(Protocol):
    def follow(self, job_id: str, *, idle_seconds: float) -> AsyncIterator[bool]:
        """Yields True when the job changed, False after idle_seconds of silence; ends when it is done."""
        ...


class JobQueue(Protocol):
    """Enqueue after the transaction that created the work has committed."""

    async def enqueue(self, function: str, *args: Any, job_id: str | None = None) -> bool:
        """False when a job with this id is already queued (nothing was added)."""
        ...

    async def forget(self, job_id: str) -> None:
        """Forget a job whose worker is gone, so that its id can be enqueued again."""
        ...


async def create_job(
    uow: UnitOfWork,
    tenant_id: uuid.UUID,
    *,
    kind: str,
    dedupe_key: str | None = None,
    args: dict[str, Any] | None = None,
) -> Job:
    """A PENDING job, or the PENDING/RUNNING one with the same dedupe key (enqueue is idempotent).

    ``args`` are what the job function takes besides the tenant and job ids: stored with the job,
    so lost work can be enqueued again from the record."""
    if dedupe_key is not None:
        existing = await uow.jobs.active_with_key(dedupe_key)
        if existing is not None:
            return existing
    return await uow.jobs.add(uuid.uuid4(), tenant_id=tenant_id, kind=kind, dedupe_key=dedupe_key, args=args)


async def get_job(uow: UnitOfWork, actor: Actor, job_id: uuid.UUID) -> Job:
    require_read(actor)
    job = await uow.jobs.get(job_id)
    if job is None:
        raise NotFound("Job not found", field=["id"])
    return job


async def start(uow: UnitOfWork, job_id: uuid.UUID, message: str) -> Job | None:
    """None when the job is already finished (a repeated delivery): do nothing then.

    A RUNNING job starts again: its worker died, ARQ delivered it anew, and the body is idempotent.
    """
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


async def list_jobs(uow: UnitOfWork, actor: Actor, *, page: PageRequest) -> Page[Job]:
    require_read(actor)
    return await uow.jobs.page(page)


async def cancel_job(uow: UnitOfWork, actor: Actor, job_id: uuid.UUID) -> Job:
    require_write(actor)
    current = await uow.jobs.get(job_id)
    if current is None:
        raise NotFound("Job not found", field=["jobId"])
    if current.status.finished:
        raise InvalidInput(f"The job has already ended ({current.status.value})", field=["jobId"])
    cancelled = await uow.jobs.request_cancel(job_id)
    return cancelled or current


async def cancel_requested(uow: UnitOfWork, job_id: uuid.UUID) -> bool:
    job = await uow.jobs.get(job_id)
    return job is None or job.cancel_requested or job.status is JobStatus.CANCELLED


async def mark_cancelled(uow: UnitOfWork, job_id: uuid.UUID, result: dict[str, Any]) -> Job | None:
    return await uow.jobs.update(job_id, status=JobStatus.CANCELLED, message="Cancelled", result=result)


async def retrying(uow: UnitOfWork, job_id: uuid.UUID, message: str) -> Job | None:
    return await uow.jobs.update(job_id, message=message)


def choose_providers(
    kind: str,
    asked: Sequence[Provider] | None,
    *,
    supported: Sequence[Provider],
    connected: Sequence[Provider],
) -> list[Provider]:
    """The providers a sync covers: those asked for (each connected and able), or every able one."""
    if asked:
        chosen = list(dict.fromkeys(asked))
        unable = [p for p in chosen if p not in supported]
        if unable:
            raise InvalidInput(
                f"{', '.join(p.value.title() for p in unable)} cannot sync {kind}", field=["providers"]
            )
        missing = [p for p in chosen if p not in connected]
        if missing:
            raise NotConnected(
                f"Connect {', '.join(p.value.title() for p in missing)} first", field=["providers"]
            )
        return chosen
    chosen = [p for p in supported if p in connected]
    if not chosen:
        article = "an" if kind[:1] in "aeiou" else "a"
        raise NotConnected(f"Connect {article} {kind} provider first", field=["providers"])
    return chosen
