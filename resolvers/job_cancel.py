from __future__ import annotations

import uuid

from domain import jobs
from domain.model import Job
from resolvers.context import Context


async def cancel_job(ctx: Context, *, job_id: uuid.UUID) -> Job:
    async with ctx.transaction() as uow:
        job = await jobs.cancel_job(uow, ctx.require_actor, job_id)
    return job
