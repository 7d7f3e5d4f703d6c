"""Jobs as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import strawberry
from strawberry.scalars import JSON

from domain import model
from schema.common import Node, UserError, to_global_id

JobStatusEnum: TypeAlias = model.JobStatus
strawberry.enum(model.JobStatus, name="JobStatus")


@strawberry.type
class Job(Node):
    id: strawberry.ID
    kind: str
    status: JobStatusEnum
    progress: float
    message: str | None
    result: JSON | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_domain(cls, job: model.Job) -> Job:
        return cls(
            id=to_global_id("Job", job.id),
            kind=job.kind,
            status=job.status,
            # Stored as a 4-byte `real`: 0.05 reads back as 0.05000000074505806.
            progress=round(job.progress, 4),
            message=job.message,
            result=None if job.result is None else JSON(job.result),
            error=job.error,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


@strawberry.type
class JobPayload:
    job: Job | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
