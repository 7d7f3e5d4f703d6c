from __future__ import annotations

from collections.abc import Sequence

from domain import jobs
from domain.access import require_write
from domain.model import Job, JobStatus, Provider
from domain.providers import Capability
from resolvers.context import Context


async def start_sync(ctx: Context, *, kind: str, providers: Sequence[Provider] | None) -> Job:
    """One job per kind and provider set while one runs: asking again returns the running job."""
    actor = ctx.require_actor
    tenant_id = require_write(actor)
    supported = ctx.services.providers.supporting(Capability(kind))
    async with ctx.transaction() as uow:
        connected = [c.provider for c in await uow.connections.all()]
        chosen = jobs.choose_providers(kind, providers, supported=supported, connected=connected)
        dedupe = f"{kind}_sync:{','.join(sorted(p.value for p in chosen))}"
        job = await jobs.create_job(
            uow,
            tenant_id,
            kind=f"{kind}_sync",
            dedupe_key=dedupe,
            args={"providers": [p.value for p in chosen]},
        )
        if job.status is JobStatus.PENDING:
            await uow.outbox.enqueue_job(
                f"sync_{kind}", str(tenant_id), str(job.id), [p.value for p in chosen], key=f"sync:{job.id}"
            )
    return job
