from __future__ import annotations

from domain import jobs
from domain.access import require_write
from domain.model import Job, JobStatus
from resolvers.context import Context

STRATEGY_KIND = "strategy"


async def generate_strategy(ctx: Context, *, goals: str | None) -> Job:
    actor = ctx.require_actor
    tenant_id = require_write(actor)
    async with ctx.transaction() as uow:
        # One strategy job at a time per tenant: asking again returns the running one.
        job = await jobs.create_job(
            uow, tenant_id, kind=STRATEGY_KIND, dedupe_key=STRATEGY_KIND, args={"goals": goals}
        )
        if job.status is JobStatus.PENDING:
            # The goals (free text) stay in the job's row (args); the outbox carries ids only.
            await uow.outbox.enqueue_job(
                "generate_strategy", str(tenant_id), str(job.id), None, key=f"strategy:{job.id}"
            )
    return job
