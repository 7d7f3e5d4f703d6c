"""Calendar and inventory sync: merging what providers report into one set of appointments.

The same booking can reach us through several providers (a Square booking mirrored into Google
Calendar). It is one appointment with several sources when the providers share a reference, or
when the same contact has a booking starting within ``MATCH_TOLERANCE`` of it.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain.errors import InvalidInput
from domain.model import NewContact, Provider
from domain.pii import looks_like_email, normalize_email, try_normalize_phone
from domain.sync import ExternalAppointment

if TYPE_CHECKING:
    from domain.contacts import PiiVault
    from domain.ports import UnitOfWork

MATCH_TOLERANCE = timedelta(minutes=15)


@dataclass(frozen=True)
class StoredAppointment:
    id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    contact_id: uuid.UUID | None
    shared_reference: str | None


@dataclass(frozen=True)
class AppointmentWrite:
    appointment_id: uuid.UUID
    record: ExternalAppointment
    contact_id: uuid.UUID | None


@dataclass
class PagePlan:
    creates: list[AppointmentWrite] = field(default_factory=list)
    updates: list[AppointmentWrite] = field(default_factory=list)
    # New sources for an appointment first seen through another provider.
    matched: list[AppointmentWrite] = field(default_factory=list)
    skipped: int = 0


@dataclass
class SyncStats:
    """What a sync run did; shown in ``job.result``."""

    windows: list[list[str]] = field(default_factory=list)
    pages: int = 0
    fetched: int = 0
    created: int = 0
    updated: int = 0
    matched: int = 0
    skipped: int = 0
    contacts_created: int = 0
    provider_total: int | None = None
    # Inventory: items no longer listed, deleted. Calendars: sources no longer returned inside a
    # completely read window, cancelled (kept), and the appointments left with no active source.
    removed: int = 0
    cancelled: int = 0
    incremental: bool = False

    @property
    def upserted(self) -> int:
        return self.created + self.updated + self.matched

    def as_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "pages": self.pages,
            "fetched": self.fetched,
            "upserted": self.upserted,
            "created": self.created,
            "updated": self.updated,
            "matched": self.matched,
            "skipped": self.skipped,
            "contactsCreated": self.contacts_created,
            "providerTotal": self.provider_total,
            "removed": self.removed,
            "cancelled": self.cancelled,
            "incremental": self.incremental,
        }


def plan_page(
    records: Sequence[ExternalAppointment],
    *,
    known_sources: dict[str, uuid.UUID],
    by_reference: dict[str, StoredAppointment],
    candidates: Iterable[StoredAppointment],
    contact_of: dict[str, uuid.UUID | None],
) -> PagePlan:
    """Decide, for one page of one provider, what to create, update and attach.

    ``known_sources``: external id → appointment already linked to this provider's record.
    ``contact_of``: external id → contact resolved for the record's customer.
    ``candidates`` and ``by_reference``: stored appointments that have no source of this provider yet
    (of the page's contacts, near the page's times; or sharing a reference).
    """
    plan = PagePlan()
    by_contact: dict[uuid.UUID, list[StoredAppointment]] = {}
    for candidate in candidates:
        if candidate.contact_id is not None:
            by_contact.setdefault(candidate.contact_id, []).append(candidate)
    taken: set[uuid.UUID] = set()
    seen: set[str] = set()
    for record in records:
        if record.external_id in seen or record.ends_at < record.starts_at:
            plan.skipped += 1
            continue
        seen.add(record.external_id)
        contact_id = contact_of.get(record.external_id)
        existing = known_sources.get(record.external_id)
        if existing is not None:
            plan.updates.append(AppointmentWrite(existing, record, contact_id))
            continue
        if record.status == "cancelled":
            # A cancellation of a booking we never had (deleted before the first sync) adds nothing.
            plan.skipped += 1
            continue
        match = by_reference.get(record.shared_reference) if record.shared_reference else None
        if match is not None and match.id in taken:
            match = None  # one stored appointment takes one record of this provider
        if match is None and contact_id is not None:
            match = next(
                (
                    c
                    for c in by_contact.get(contact_id, ())
                    if c.id not in taken and abs(c.starts_at - record.starts_at) <= MATCH_TOLERANCE
                ),
                None,
            )
        if match is not None:
            taken.add(match.id)
            plan.matched.append(AppointmentWrite(match.id, record, contact_id or match.contact_id))
            continue
        # Two records of one provider are two bookings, even for one client at one time.
        plan.creates.append(AppointmentWrite(uuid.uuid4(), record, contact_id))
    return plan


async def ingest_appointments(
    uow: UnitOfWork,
    vault: PiiVault,
    tenant_id: uuid.UUID,
    provider: Provider,
    records: Sequence[ExternalAppointment],
    stats: SyncStats,
) -> None:
    """Merge one provider page: contacts through the blind index, then appointments by plan_page."""
    contact_of = await _resolve_contacts(uow, vault, tenant_id, provider, records, stats)
    external_ids = [r.external_id for r in records]
    known = await uow.sync.sources_for(provider, external_ids)
    fresh = [r for r in records if r.external_id not in known]
    by_reference = await uow.sync.unlinked_by_reference(
        provider, sorted({r.shared_reference for r in fresh if r.shared_reference})
    )
    contacts = sorted({c for r in fresh if (c := contact_of.get(r.external_id)) is not None})
    candidates = (
        await uow.sync.unlinked_near(
            provider, contacts, min(r.starts_at for r in fresh), max(r.starts_at for r in fresh)
        )
        if contacts
        else []
    )
    plan = plan_page(
        records, known_sources=known, by_reference=by_reference, candidates=candidates, contact_of=contact_of
    )
    await uow.sync.apply(provider, plan)
    stats.fetched += len(records)
    stats.created += len(plan.creates)
    stats.updated += len(plan.updates)
    stats.matched += len(plan.matched)
    stats.skipped += plan.skipped


async def _resolve_contacts(
    uow: UnitOfWork,
    vault: PiiVault,
    tenant_id: uuid.UUID,
    provider: Provider,
    records: Sequence[ExternalAppointment],
    stats: SyncStats,
) -> dict[str, uuid.UUID | None]:
    """Find or create the contact of every booking's customer, one lookup and one insert per page."""
    people: dict[str, tuple[str | None, str | None, str | None]] = {}  # external id -> (email, phone, name)
    for record in records:
        customer = record.customer
        if customer is None:
            continue
        email = _valid_email(customer.email)
        phone = _phone(customer.phone, vault.default_region) if customer.phone else None
        if email or phone:
            people[record.external_id] = (email, phone, customer.name)
    if not people:
        return {}
    emails = {e for e, _, _ in people.values() if e}
    phones = {p for _, p, _ in people.values() if p}

    async def lookup() -> tuple[dict[str, uuid.UUID], dict[str, uuid.UUID]]:
        email_digest = {vault.index(tenant_id, "email", e): e for e in emails}
        phone_digest = {vault.index(tenant_id, "phone", p): p for p in phones}
        by_email = await uow.sync.contacts_by_index("email", list(email_digest))
        by_phone = await uow.sync.contacts_by_index("phone", list(phone_digest))
        return (
            {email_digest[d]: cid for d, cid in by_email.items()},
            {phone_digest[d]: cid for d, cid in by_phone.items()},
        )

    by_email, by_phone = await lookup()
    new: dict[tuple[str | None, str | None], NewContact] = {}
    for email, phone, name in people.values():
        if (email and email in by_email) or (phone and phone in by_phone) or (email, phone) in new:
            continue
        if any((email and email == e) or (phone and phone == p) for e, p in new):
            continue
        new[(email, phone)] = _new_contact(vault, tenant_id, provider, email=email, phone=phone, name=name)
    if new:
        stats.contacts_created += await uow.sync.insert_contacts(list(new.values()))
        by_email, by_phone = await lookup()
    return {
        external_id: (by_email.get(email) if email else None) or (by_phone.get(phone) if phone else None)
        for external_id, (email, phone, _) in people.items()
    }


@functools.lru_cache(maxsize=8192)
def _valid_email(raw: str | None) -> str | None:
    # Cached: a sync sees the same few hundred customers on thousands of bookings.
    if not raw or not looks_like_email(raw):
        return None
    try:
        return normalize_email(raw)
    except InvalidInput:
        return None


@functools.lru_cache(maxsize=8192)
def _phone(raw: str, region: str) -> str | None:
    return try_normalize_phone(raw, default_region=region)


def _new_contact(
    vault: PiiVault,
    tenant_id: uuid.UUID,
    provider: Provider,
    *,
    email: str | None,
    phone: str | None,
    name: str | None,
) -> NewContact:
    display = " ".join((name or "").split())[:200] or (email.split("@")[0] if email else "Client")
    return vault.new_contact(
        tenant_id, display_name=display, email=email, phone=phone, source=provider.value.lower()
    )
