"""Root Query and Mutation: map arguments to resolvers, domain results to types, errors to data."""

from __future__ import annotations

import strawberry

from domain.errors import DomainError
from resolvers import (
    api_key_create,
    api_key_revoke,
    contact_create,
    onboarding_step_complete,
    queries,
    settings_update,
    tenant_create,
)
from schema.api_keys import (
    ApiKey,
    CreateApiKeyInput,
    CreateApiKeyPayload,
    RevokeApiKeyInput,
    RevokeApiKeyPayload,
)
from schema.askvx import ChatMessage, ChatSession, TrainvxMemory
from schema.askvx_root import AskvxMutation, AskvxQuery, AskvxSubscription
from schema.common import AppInfo, Node, UserError, expect_global_id, from_global_id
from schema.contacts import Contact, ContactConnection, CreateContactInput, CreateContactPayload
from schema.jobs import Job
from schema.syncs import Appointment, InventoryItem
from schema.syncs_root import SyncMutation, SyncQuery, SyncSubscription
from schema.tenancy import (
    CompleteOnboardingStepInput,
    CompleteOnboardingStepPayload,
    CreateTenantInput,
    CreateTenantPayload,
    Onboarding,
    Settings,
    Tenant,
    UpdateSettingsInput,
    UpdateSettingsPayload,
    Viewer,
)


@strawberry.type
class Query(AskvxQuery, SyncQuery):
    @strawberry.field(description="Any object of the caller's tenant by global ID; null for anything else.")
    async def node(self, info: AppInfo, id: strawberry.ID) -> Node | None:
        parsed = from_global_id(id)
        if parsed is None:
            return None
        found = await queries.node(info.context, *parsed)
        if found is None:
            return None
        mapper = {
            "Tenant": Tenant,
            "Contact": Contact,
            "ApiKey": ApiKey,
            "ChatSession": ChatSession,
            "ChatMessage": ChatMessage,
            "TrainvxMemory": TrainvxMemory,
            "Job": Job,
            "Appointment": Appointment,
            "InventoryItem": InventoryItem,
        }[parsed[0]]
        return mapper.from_domain(found)  # type: ignore[attr-defined, no-any-return]

    @strawberry.field
    def viewer(self, info: AppInfo) -> Viewer:
        return Viewer.from_actor(info.context.require_actor)

    @strawberry.field
    async def settings(self, info: AppInfo) -> Settings:
        return Settings.from_domain(await queries.settings(info.context))

    @strawberry.field
    async def onboarding(self, info: AppInfo) -> Onboarding:
        return Onboarding.from_domain(await queries.onboarding(info.context))

    @strawberry.field
    async def api_keys(self, info: AppInfo) -> list[ApiKey]:
        return [ApiKey.from_domain(k) for k in await queries.list_api_keys(info.context)]

    @strawberry.field(
        description="Newest first. `search`: an exact email or phone number, or the start of a name."
    )
    async def contacts(
        self, info: AppInfo, first: int | None = None, after: str | None = None, search: str | None = None
    ) -> ContactConnection:
        page = await queries.list_contacts(info.context, first=first, after=after, search=search)
        return ContactConnection.from_page(page)


@strawberry.type
class Mutation(AskvxMutation, SyncMutation):
    @strawberry.mutation(description="Create a tenant; the caller becomes its OWNER_ADMIN.")
    async def create_tenant(self, info: AppInfo, input: CreateTenantInput) -> CreateTenantPayload:
        try:
            tenant = await tenant_create.create_tenant(info.context, name=input.name, timezone=input.timezone)
        except DomainError as e:
            return CreateTenantPayload(user_errors=UserError.list_of(e))
        return CreateTenantPayload(tenant=Tenant.from_domain(tenant))

    @strawberry.mutation
    async def update_settings(self, info: AppInfo, input: UpdateSettingsInput) -> UpdateSettingsPayload:
        brand = input.brand_profile
        try:
            settings = await settings_update.update_settings(
                info.context,
                timezone=input.timezone,
                quiet_hours=(input.quiet_hours.start, input.quiet_hours.end) if input.quiet_hours else None,
                brand_profile=(
                    {"business_name": brand.business_name, "tone": brand.tone, "services": brand.services}
                    if brand
                    else None
                ),
                extra=input.extra,  # type: ignore[arg-type]  # JSON is a NewType over Any
            )
        except DomainError as e:
            return UpdateSettingsPayload(user_errors=UserError.list_of(e))
        return UpdateSettingsPayload(settings=Settings.from_domain(settings))

    @strawberry.mutation(description="Mark an onboarding step done. Idempotent.")
    async def complete_onboarding_step(
        self, info: AppInfo, input: CompleteOnboardingStepInput
    ) -> CompleteOnboardingStepPayload:
        try:
            onboarding = await onboarding_step_complete.complete_onboarding_step(
                info.context,
                step=input.step,
                context=input.context,  # type: ignore[arg-type]
            )
        except DomainError as e:
            return CompleteOnboardingStepPayload(user_errors=UserError.list_of(e))
        return CompleteOnboardingStepPayload(onboarding=Onboarding.from_domain(onboarding))

    @strawberry.mutation
    async def create_api_key(self, info: AppInfo, input: CreateApiKeyInput) -> CreateApiKeyPayload:
        try:
            key, token = await api_key_create.create_api_key(
                info.context, name=input.name, scopes=input.scopes
            )
        except DomainError as e:
            return CreateApiKeyPayload(user_errors=UserError.list_of(e))
        return CreateApiKeyPayload(api_key=ApiKey.from_domain(key), token=token)

    @strawberry.mutation
    async def revoke_api_key(self, info: AppInfo, input: RevokeApiKeyInput) -> RevokeApiKeyPayload:
        try:
            key_id = expect_global_id(input.api_key_id, "ApiKey", field="apiKeyId")
            await api_key_revoke.revoke_api_key(info.context, key_id=key_id)
        except DomainError as e:
            return RevokeApiKeyPayload(user_errors=UserError.list_of(e))
        return RevokeApiKeyPayload(revoked_api_key_id=input.api_key_id)

    @strawberry.mutation
    async def create_contact(self, info: AppInfo, input: CreateContactInput) -> CreateContactPayload:
        try:
            contact = await contact_create.create_contact(
                info.context,
                display_name=input.display_name,
                email=input.email,
                phone=input.phone,
                sms_consent=bool(input.sms_consent),
                email_consent=bool(input.email_consent),
                tags=input.tags,
            )
        except DomainError as e:
            return CreateContactPayload(user_errors=UserError.list_of(e))
        return CreateContactPayload(contact=Contact.from_domain(contact))


@strawberry.type
class Subscription(AskvxSubscription, SyncSubscription):
    pass
