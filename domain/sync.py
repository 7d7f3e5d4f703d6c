"""What provider integrations hand to the sync engine, and what the engine asks of them.

Integrations (``integrations/<provider>``) implement these Protocols with real HTTP clients; the
domain sees only records and pages, never a provider's wire format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, Protocol, TypeVar

from domain.model import Provider

AppointmentStatus = Literal["booked", "cancelled", "no_show", "completed"]
ProviderErrorKind = Literal["transient", "rate_limited", "auth", "permanent"]
T = TypeVar("T")


class ProviderError(Exception):
    """A failed provider call, classified for the job runner.

    transient / rate_limited: retry later (``retry_after`` seconds when the provider said so);
    auth: the token is refused and cannot be refreshed — the connection becomes EXPIRED;
    permanent: a request the provider will never accept (bad configuration, missing scope).
    ``message`` is safe to show the operator: no tokens, no personal data.
    """

    def __init__(
        self,
        kind: ProviderErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ProviderErrorKind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after


class IncompleteSync(Exception):
    """The provider's data for the asked range could not be covered (e.g. a window that cannot be split)."""


@dataclass(frozen=True)
class ExternalCustomer:
    external_id: str | None
    name: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class ExternalAppointment:
    provider: Provider
    external_id: str
    title: str
    starts_at: datetime  # timezone-aware
    ends_at: datetime  # timezone-aware
    status: AppointmentStatus = "booked"
    customer: ExternalCustomer | None = None
    # An id two providers share for the same booking (an iCalendar UID, a reference written into notes).
    shared_reference: str | None = None


@dataclass(frozen=True)
class ExternalInventoryItem:
    provider: Provider
    external_id: str
    sku: str
    name: str
    quantity: int | None  # None: stock not tracked (never low stock)
    price_cents: int
    currency: str = "USD"
    low_stock_threshold: int | None = None


@dataclass(frozen=True)
class FetchedPage(Generic[T]):
    """One page as the provider returned it, and what it said about the whole."""

    items: list[T]
    # The provider's own total for the query, where its API reports one.
    provider_total: int | None = None
    # For APIs walked by date windows: the window this page covers.
    window: tuple[datetime, datetime] | None = None


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    scopes: tuple[str, ...] = ()
    # The provider's id of the connected account (Square merchant, Shopify shop, Google email...).
    account_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


class OAuthClient(Protocol):
    def authorize_url(self, *, state: str, redirect_uri: str) -> str: ...
    async def exchange_code(self, *, code: str, redirect_uri: str) -> TokenSet: ...
    async def refresh(self, refresh_token: str) -> TokenSet: ...
    async def revoke(self, token: TokenSet) -> None:
        """Revoke where the provider supports it; a no-op elsewhere."""
        ...


class CalendarSource(Protocol):
    def appointments(
        self, start: datetime, end: datetime, *, sync_token: str | None = None
    ) -> AsyncIterator[FetchedPage[ExternalAppointment]]:
        """Every appointment overlapping [start, end), following the provider's paging to the end.

        Raises IncompleteSync rather than returning less than the provider has.
        """
        ...

    @property
    def next_sync_token(self) -> str | None:
        """After a full iteration: a token for an incremental sync next time, where supported."""
        ...


class InventorySource(Protocol):
    def items(self) -> AsyncIterator[FetchedPage[ExternalInventoryItem]]:
        """Every stocked item with its current quantity, following the provider's paging to the end."""
        ...


class ProviderRegistry(Protocol):
    """Builds provider clients for a connection; None where a provider lacks that capability."""

    def oauth(self, provider: Provider) -> OAuthClient | None: ...

    def calendar(
        self, provider: Provider, tokens: TokenSet, config: Mapping[str, str]
    ) -> CalendarSource | None: ...

    def inventory(
        self, provider: Provider, tokens: TokenSet, config: Mapping[str, str]
    ) -> InventorySource | None: ...
