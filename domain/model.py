"""Plain records the use cases pass around. No framework types here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    OWNER_ADMIN = "OWNER_ADMIN"
    STAFF = "STAFF"
    SUPPORT = "SUPPORT"
    OPS = "OPS"


class PlanTier(StrEnum):
    LITE = "LITE"
    STARTER = "STARTER"
    GROWTH = "GROWTH"
    PRO = "PRO"


class ApiScope(StrEnum):
    READ = "READ"
    WRITE = "WRITE"


class OnboardingStepKey(StrEnum):
    BUSINESS_BASICS = "BUSINESS_BASICS"
    CONNECTIONS = "CONNECTIONS"
    TRAIN_VX = "TRAIN_VX"
    CADENCES = "CADENCES"
    GO_LIVE = "GO_LIVE"


@dataclass(frozen=True)
class Actor:
    """Who is calling, and in which tenant. Built once per request by the auth layer."""

    user_id: str
    email: str | None = None
    tenant_id: uuid.UUID | None = None
    role: Role | None = None
    api_key_id: uuid.UUID | None = None
    scopes: frozenset[ApiScope] | None = None
    is_ops: bool = False
    # When the credentials stop being valid (a JWT's ``exp``); None: until revoked (API keys).
    expires_at: datetime | None = None

    @property
    def via_api_key(self) -> bool:
        return self.api_key_id is not None


@dataclass(frozen=True)
class Tenant:
    id: uuid.UUID
    name: str
    timezone: str
    plan_tier: PlanTier
    subscription_status: str
    created_at: datetime


@dataclass(frozen=True)
class QuietHours:
    start: str
    end: str


@dataclass(frozen=True)
class BrandProfile:
    business_name: str | None = None
    tone: str | None = None
    services: tuple[str, ...] = ()


@dataclass(frozen=True)
class TenantSettings:
    timezone: str
    quiet_hours: QuietHours | None
    brand_profile: BrandProfile
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OnboardingStep:
    key: OnboardingStepKey
    completed_at: datetime | None

    @property
    def completed(self) -> bool:
        return self.completed_at is not None


@dataclass(frozen=True)
class Onboarding:
    steps: tuple[OnboardingStep, ...]

    @property
    def completed_count(self) -> int:
        return sum(1 for s in self.steps if s.completed)

    @property
    def complete(self) -> bool:
        return self.completed_count == len(self.steps)


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str
    scopes: tuple[ApiScope, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class Contact:
    id: uuid.UUID
    tenant_id: uuid.UUID
    display_name: str
    email_masked: str | None
    phone_masked: str | None
    sms_consent: bool
    email_consent: bool
    tags: tuple[str, ...]
    source: str
    last_visit_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class NewContact:
    """A contact ready to store: PII already encrypted and indexed."""

    id: uuid.UUID
    display_name: str
    name_search: str
    email_ciphertext: bytes | None
    email_bidx: bytes | None
    email_masked: str | None
    phone_ciphertext: bytes | None
    phone_bidx: bytes | None
    phone_masked: str | None
    sms_consent: bool
    email_consent: bool
    tags: tuple[str, ...]
    source: str


class ChatRole(StrEnum):
    USER = "USER"
    ASSISTANT = "ASSISTANT"
    SYSTEM = "SYSTEM"


class ChatMessageStatus(StrEnum):
    STREAMING = "STREAMING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Plan:
    tier: PlanTier
    name: str
    price_cents: int
    ai_tokens_monthly: int
    messages_monthly: int


@dataclass(frozen=True)
class AiUsage:
    """This month's AI use of a tenant against its plan's caps."""

    plan: Plan
    tokens_used: int
    messages_used: int


@dataclass(frozen=True)
class ChatSession:
    id: uuid.UUID
    tenant_id: uuid.UUID
    title: str
    created_at: datetime


@dataclass(frozen=True)
class ChatMessage:
    id: uuid.UUID
    tenant_id: uuid.UUID
    session_id: uuid.UUID
    role: ChatRole
    content: str
    status: ChatMessageStatus
    error: str | None
    created_at: datetime


@dataclass(frozen=True)
class TrainvxMemory:
    id: uuid.UUID
    key: str
    value: str
    updated_at: datetime


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    status: JobStatus
    progress: float
    message: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    cancel_requested: bool = False
    attempts: int = 0


class Provider(StrEnum):
    SQUARE = "SQUARE"
    ACUITY = "ACUITY"
    GOOGLE = "GOOGLE"
    APPLE = "APPLE"
    SHOPIFY = "SHOPIFY"
    HUBSPOT = "HUBSPOT"


class ConnectionStatus(StrEnum):
    CONNECTED = "CONNECTED"
    EXPIRED = "EXPIRED"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Connection:
    """A tenant's link to a provider. Tokens stay encrypted here; ``domain.connections`` opens them."""

    id: uuid.UUID
    provider: Provider
    status: ConnectionStatus
    account_id: str | None
    access_token_ciphertext: bytes | None
    refresh_token_ciphertext: bytes | None
    expires_at: datetime | None
    scopes: tuple[str, ...]
    config: dict[str, Any]
    sync_state: dict[str, Any]
    last_error: str | None
    connected_at: datetime
    last_synced_at: datetime | None


@dataclass(frozen=True)
class Appointment:
    id: uuid.UUID
    title: str
    starts_at: datetime
    ends_at: datetime
    status: str
    contact_id: uuid.UUID | None


@dataclass(frozen=True)
class AppointmentSource:
    provider: Provider
    external_id: str


@dataclass(frozen=True)
class InventoryItem:
    id: uuid.UUID
    sku: str
    name: str
    quantity: int | None  # None: the provider does not track this item's stock
    low_stock_threshold: int
    price_cents: int
    provider: Provider

    @property
    def tracked(self) -> bool:
        return self.quantity is not None


@dataclass(frozen=True)
class InventorySummary:
    total_skus: int
    total_units: int
    low_stock_count: int
    value_cents: int
    last_synced_at: datetime | None
    untracked_count: int = 0
