"""Tenants, the viewer, settings and onboarding."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from domain import model
from resolvers import queries
from schema.common import (
    AppInfo,
    Node,
    OnboardingStepKeyEnum,
    PlanTierEnum,
    RoleEnum,
    UserError,
    to_global_id,
)


@strawberry.type
class Tenant(Node):
    id: strawberry.ID
    name: str
    timezone: str
    plan_tier: PlanTierEnum
    subscription_status: str
    created_at: datetime

    @classmethod
    def from_domain(cls, tenant: model.Tenant) -> Tenant:
        return cls(
            id=to_global_id("Tenant", tenant.id),
            name=tenant.name,
            timezone=tenant.timezone,
            plan_tier=tenant.plan_tier,
            subscription_status=tenant.subscription_status,
            created_at=tenant.created_at,
        )


@strawberry.type
class Viewer:
    user_id: strawberry.ID
    email: str | None
    role: RoleEnum | None

    @strawberry.field
    async def tenant(self, info: AppInfo) -> Tenant | None:
        tenant = await queries.viewer_tenant(info.context)
        return Tenant.from_domain(tenant) if tenant else None

    @strawberry.field
    async def onboarding_complete(self, info: AppInfo) -> bool:
        if info.context.require_actor.tenant_id is None:
            return False
        return (await queries.onboarding(info.context)).complete

    @classmethod
    def from_actor(cls, actor: model.Actor) -> Viewer:
        role = model.Role.OPS if actor.is_ops and actor.role is None else actor.role
        return cls(user_id=strawberry.ID(actor.user_id), email=actor.email, role=role)


@strawberry.type
class QuietHours:
    start: str
    end: str


@strawberry.type
class BrandProfile:
    business_name: str | None
    tone: str | None
    services: list[str]


@strawberry.type
class Settings:
    timezone: str
    quiet_hours: QuietHours | None
    brand_profile: BrandProfile
    extra: JSON

    @classmethod
    def from_domain(cls, s: model.TenantSettings) -> Settings:
        return cls(
            timezone=s.timezone,
            quiet_hours=QuietHours(start=s.quiet_hours.start, end=s.quiet_hours.end)
            if s.quiet_hours
            else None,
            brand_profile=BrandProfile(
                business_name=s.brand_profile.business_name,
                tone=s.brand_profile.tone,
                services=list(s.brand_profile.services),
            ),
            extra=JSON(s.extra),
        )


@strawberry.type
class OnboardingStep:
    key: OnboardingStepKeyEnum
    completed: bool
    completed_at: datetime | None


@strawberry.type
class Onboarding:
    steps: list[OnboardingStep]
    completed_count: int
    complete: bool

    @classmethod
    def from_domain(cls, o: model.Onboarding) -> Onboarding:
        return cls(
            steps=[
                OnboardingStep(key=s.key, completed=s.completed, completed_at=s.completed_at) for s in o.steps
            ],
            completed_count=o.completed_count,
            complete=o.complete,
        )


@strawberry.input
class CreateTenantInput:
    name: str
    timezone: str | None = None


@strawberry.type
class CreateTenantPayload:
    tenant: Tenant | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class QuietHoursInput:
    start: str
    end: str


@strawberry.input
class BrandProfileInput:
    business_name: str | None = None
    tone: str | None = None
    services: list[str] | None = None


@strawberry.input
class UpdateSettingsInput:
    timezone: str | None = None
    quiet_hours: QuietHoursInput | None = None
    brand_profile: BrandProfileInput | None = None
    extra: JSON | None = None


@strawberry.type
class UpdateSettingsPayload:
    settings: Settings | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class CompleteOnboardingStepInput:
    step: OnboardingStepKeyEnum
    context: JSON | None = None


@strawberry.type
class CompleteOnboardingStepPayload:
    onboarding: Onboarding | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
