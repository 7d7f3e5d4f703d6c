"""Calendar and inventory sync: merging what providers report into one set of appointments.

The same booking can reach us through several providers (a Square booking mirrored into Google
Calendar). It is one appointment with several sources when the providers share a reference, or
when the same contact has a booking starting within ``MATCH_TOLERANCE`` of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain.model import Provider
from domain.pii import try_normalize_phone
from domain.sync import ExternalAppointment, ExternalCustomer

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
    removed: int = 0
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
            "incremental": self.incremental,
        }


def customer_key(customer: ExternalCustomer | None, *, default_region: str = "US") -> tuple[str, str] | None:
    """How a booking's customer is matched to a contact: email first, else phone (both normalized)."""
    if customer is None:
        return None
    if customer.email and "@" in customer.email:
        return ("email", customer.email.strip().lower())
    if customer.phone:
        phone = try_normalize_phone(customer.phone, default_region=default_region)
        if phone:
            return ("phone", phone)
    return None


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
        match = by_reference.get(record.shared_reference) if record.shared_reference else None
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


def provider_label(provider: Provider) -> str:
    return provider.value.lower()
