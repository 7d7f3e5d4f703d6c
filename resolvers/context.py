"""The per-request (per-WebSocket-connection) context every resolver receives."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from strawberry.dataloader import DataLoader

from domain.ai import Analytics, ReplyFeed
from domain.connections import ConnectFlowPort
from domain.contacts import PiiVault
from domain.errors import Forbidden
from domain.jobs import JobEvents, JobQueue
from domain.model import Actor, AppointmentSource, ChatMessage, Contact, Tenant
from domain.pagination import Page, PageRequest
from domain.ports import KeyRevocations, SharedUnit, UnitOfWork, UnitOfWorkFactory
from domain.providers import ProviderCatalog
from domain.throttle import CostBudget


@dataclass(frozen=True)
class AppServices:
    """What resolvers need, as domain ports; the composition root supplies the implementations."""

    uow: UnitOfWorkFactory
    vault: PiiVault
    queue: JobQueue
    feed: ReplyFeed
    connect: ConnectFlowPort
    providers: ProviderCatalog
    job_events: JobEvents
    analytics: Analytics
    budget: CostBudget | None = None  # the per-tenant rate limit; None: not limited
    revocations: KeyRevocations | None = None  # ends open WebSockets of a revoked key, in every process
    max_tenants_per_user: int = 5


@dataclass
class Loaders:
    tenant_by_id: DataLoader[uuid.UUID, Tenant | None]
    contact_by_id: DataLoader[uuid.UUID, Contact | None]
    messages_by_session: DataLoader[tuple[uuid.UUID, PageRequest], Page[ChatMessage]]
    sources_by_appointment: DataLoader[uuid.UUID, list[AppointmentSource]]


@dataclass
class Context:
    services: AppServices
    request: Any = None
    response: Any = None
    actor: Actor | None = None
    connection_params: dict[str, Any] | None = None
    # The HTTP request's unit of work (None over WebSockets: each use is a short unit of its own,
    # so a subscription holds no transaction while it waits).
    unit: SharedUnit | None = None
    _loaders: Loaders | None = field(default=None, repr=False)

    @property
    def require_actor(self) -> Actor:
        if self.actor is None:
            raise Forbidden("Not signed in")
        return self.actor

    def transaction(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """The request's transaction (joined; committed once when the operation or mutation field
        ends), or, without one, a unit of its own committed when the block ends."""
        actor = self.require_actor
        if self.unit is not None:
            return self.unit.join()
        return self.services.uow.for_actor(actor)

    def reset_loaders(self) -> None:
        self._loaders = None

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            from resolvers.loaders import build_loaders

            self._loaders = build_loaders(self.transaction, self.require_actor)
        return self._loaders


__all__ = ["AppServices", "Context", "Loaders", "UnitOfWork"]
