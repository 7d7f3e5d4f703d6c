from __future__ import annotations

from typing import Any

from domain import tenancy
from domain.model import Onboarding, OnboardingStepKey
from resolvers.context import Context


async def complete_onboarding_step(
    ctx: Context, *, step: OnboardingStepKey, context: dict[str, Any] | None
) -> Onboarding:
    async with ctx.transaction() as uow:
        return await tenancy.complete_onboarding_step(uow, ctx.require_actor, step=step, context=context)
