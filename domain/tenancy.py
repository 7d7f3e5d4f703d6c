"""Tenants, their settings and onboarding."""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import available_timezones

from domain.access import require_admin, require_read, require_write
from domain.errors import Forbidden, InvalidInput, LimitExceeded
from domain.model import (
    Actor,
    BrandProfile,
    Onboarding,
    OnboardingStep,
    OnboardingStepKey,
    PlanTier,
    QuietHours,
    Tenant,
    TenantSettings,
)
from domain.ports import UnitOfWork

_HHMM = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")
MAX_EXTRA_BYTES = 16_384
MAX_SERVICES = 50


def validate_timezone(value: str, *, field: str = "timezone") -> str:
    name = value.strip()
    # ZoneInfo also accepts file paths relative to the tz database; only canonical names count.
    if name not in _iana_names():
        raise InvalidInput(
            f"Unknown timezone {name!r}: use an IANA name such as America/New_York", field=[field]
        )
    return name


@functools.cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_quiet_hours(start: str, end: str) -> QuietHours:
    for name, value in (("start", start), ("end", end)):
        if not _HHMM.fullmatch(value):
            raise InvalidInput(f"Quiet hours {name} must be HH:MM (00:00-23:59)", field=["quietHours", name])
    if start == end:
        raise InvalidInput("Quiet hours start and end must differ", field=["quietHours"])
    return QuietHours(start, end)


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not 1 <= len(cleaned) <= 200:
        raise InvalidInput("Name must be 1 to 200 characters", field=["name"])
    return cleaned


async def create_tenant(
    uow: UnitOfWork, actor: Actor, *, name: str, timezone: str | None, max_owned: int
) -> Tenant:
    if actor.via_api_key:
        raise Forbidden("API keys cannot create tenants")
    # Each tenant brings its own rate budget: without a cap, one user could mint budgets at will.
    if await uow.tenants.count_owned_locked(actor.user_id) >= max_owned:
        raise LimitExceeded(f"You already own {max_owned} tenants, the most one user may create")
    tenant = Tenant(
        id=uuid.uuid4(),
        name=_clean_name(name),
        timezone=validate_timezone(timezone) if timezone else "UTC",
        plan_tier=PlanTier.LITE,
        subscription_status="trialing",
        created_at=datetime.now(UTC),
    )
    await uow.enter_tenant(tenant.id)
    await uow.tenants.add(tenant, owner_user_id=actor.user_id)
    return tenant


async def get_settings(uow: UnitOfWork, actor: Actor) -> TenantSettings:
    return await uow.settings.get(require_read(actor))


async def update_settings(
    uow: UnitOfWork,
    actor: Actor,
    *,
    timezone: str | None = None,
    quiet_hours: tuple[str, str] | None = None,
    brand_profile: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> TenantSettings:
    tenant_id = require_admin(actor)
    current = await uow.settings.get(tenant_id)
    updated = current
    if timezone is not None:
        updated = replace(updated, timezone=validate_timezone(timezone))
    if quiet_hours is not None:
        updated = replace(updated, quiet_hours=validate_quiet_hours(*quiet_hours))
    if brand_profile is not None:
        updated = replace(updated, brand_profile=_merge_brand(current.brand_profile, brand_profile))
    if extra is not None:
        if not isinstance(extra, dict):
            raise InvalidInput("extra must be a JSON object", field=["extra"])
        if len(json.dumps(extra)) > MAX_EXTRA_BYTES:
            raise InvalidInput(f"extra is larger than {MAX_EXTRA_BYTES} bytes", field=["extra"])
        updated = replace(updated, extra=extra)
    if updated.timezone != current.timezone:
        await uow.tenants.update_timezone(tenant_id, updated.timezone)
    await uow.settings.save(tenant_id, updated)
    return updated


def _merge_brand(current: BrandProfile, patch: dict[str, Any]) -> BrandProfile:
    def text(key: str, graphql_name: str, limit: int, current_value: str | None) -> str | None:
        if patch.get(key) is None:
            return current_value
        value = str(patch[key]).strip()
        if len(value) > limit:
            raise InvalidInput(
                f"{graphql_name} must be at most {limit} characters", field=["brandProfile", graphql_name]
            )
        return value or None

    merged = replace(
        current,
        business_name=text("business_name", "businessName", 200, current.business_name),
        tone=text("tone", "tone", 500, current.tone),
    )
    if patch.get("services") is not None:
        services = tuple(s.strip() for s in patch["services"] if s.strip())
        if len(services) > MAX_SERVICES or any(len(s) > 100 for s in services):
            raise InvalidInput(
                f"At most {MAX_SERVICES} services of up to 100 characters", field=["brandProfile", "services"]
            )
        merged = replace(merged, services=services)
    return merged


async def get_onboarding(uow: UnitOfWork, actor: Actor) -> Onboarding:
    done = await uow.onboarding.completed(require_read(actor))
    return Onboarding(tuple(OnboardingStep(key, done.get(key)) for key in OnboardingStepKey))


async def complete_onboarding_step(
    uow: UnitOfWork, actor: Actor, *, step: OnboardingStepKey, context: dict[str, Any] | None
) -> Onboarding:
    tenant_id = require_write(actor)
    if context is not None and not isinstance(context, dict):
        raise InvalidInput("context must be a JSON object", field=["context"])
    # Idempotent: completing a step twice keeps the first completion time.
    await uow.onboarding.complete(tenant_id, step, context)
    return await get_onboarding(uow, actor)
