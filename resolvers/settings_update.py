from __future__ import annotations

from typing import Any

from domain import tenancy
from domain.model import TenantSettings
from resolvers.context import Context


async def update_settings(
    ctx: Context,
    *,
    timezone: str | None,
    quiet_hours: tuple[str, str] | None,
    brand_profile: dict[str, Any] | None,
    extra: dict[str, Any] | None,
) -> TenantSettings:
    async with ctx.transaction() as uow:
        return await tenancy.update_settings(
            uow,
            ctx.require_actor,
            timezone=timezone,
            quiet_hours=quiet_hours,
            brand_profile=brand_profile,
            extra=extra,
        )
