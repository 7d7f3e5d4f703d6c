"""Contacts: PII encrypted at rest, found by blind index, shown masked."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from domain.access import require_read, require_write
from domain.crypto import BlindIndex, Keyring, aad_for
from domain.errors import Conflict, InvalidInput
from domain.model import Actor, Contact, NewContact
from domain.pagination import Page, PageRequest
from domain.pii import (
    looks_like_email,
    mask_email,
    mask_phone,
    normalize_email,
    normalize_phone,
    try_normalize_phone,
)
from domain.ports import UnitOfWork

MAX_TAGS = 20
MAX_TAG_LENGTH = 40


@dataclass(frozen=True)
class PiiVault:
    keyring: Keyring
    blind_index: BlindIndex
    default_region: str = "US"

    def seal(self, tenant_id: uuid.UUID, field: str, value: str) -> tuple[bytes, bytes]:
        return (
            self.keyring.encrypt(value, aad=aad_for(tenant_id, field)),
            self.blind_index.digest(value, tenant_id=tenant_id, field=field),
        )

    def index(self, tenant_id: uuid.UUID, field: str, value: str) -> bytes:
        return self.blind_index.digest(value, tenant_id=tenant_id, field=field)

    def new_contact(
        self,
        tenant_id: uuid.UUID,
        *,
        display_name: str,
        email: str | None,
        phone: str | None,
        source: str,
        sms_consent: bool = False,
        email_consent: bool = False,
        tags: tuple[str, ...] = (),
    ) -> NewContact:
        """A contact ready to store: normalized email/phone sealed, indexed and masked."""
        email_ct, email_bidx = self.seal(tenant_id, "email", email) if email else (None, None)
        phone_ct, phone_bidx = self.seal(tenant_id, "phone", phone) if phone else (None, None)
        return NewContact(
            id=uuid.uuid4(),
            display_name=display_name,
            name_search=display_name.lower(),
            email_ciphertext=email_ct,
            email_bidx=email_bidx,
            email_masked=mask_email(email) if email else None,
            phone_ciphertext=phone_ct,
            phone_bidx=phone_bidx,
            phone_masked=mask_phone(phone) if phone else None,
            sms_consent=sms_consent,
            email_consent=email_consent,
            tags=tags,
            source=source,
        )


def _clean_tags(tags: Sequence[str] | None) -> tuple[str, ...]:
    cleaned: list[str] = []
    for tag in tags or ():
        value = " ".join(tag.split()).lower()
        if not value:
            continue
        if len(value) > MAX_TAG_LENGTH:
            raise InvalidInput(f"Tags must be at most {MAX_TAG_LENGTH} characters", field=["tags"])
        if value not in cleaned:
            cleaned.append(value)
    if len(cleaned) > MAX_TAGS:
        raise InvalidInput(f"At most {MAX_TAGS} tags", field=["tags"])
    return tuple(cleaned)


async def create_contact(
    uow: UnitOfWork,
    vault: PiiVault,
    actor: Actor,
    *,
    display_name: str,
    email: str | None = None,
    phone: str | None = None,
    sms_consent: bool = False,
    email_consent: bool = False,
    tags: Sequence[str] | None = None,
    source: str = "manual",
) -> Contact:
    tenant_id = require_write(actor)
    name = " ".join(display_name.split())
    if not 1 <= len(name) <= 200:
        raise InvalidInput("Display name must be 1 to 200 characters", field=["displayName"])
    email_norm = normalize_email(email) if email and email.strip() else None
    phone_norm = (
        normalize_phone(phone, default_region=vault.default_region) if phone and phone.strip() else None
    )
    if sms_consent and phone_norm is None:
        raise InvalidInput("SMS consent needs a phone number", field=["smsConsent"])
    if email_consent and email_norm is None:
        raise InvalidInput("Email consent needs an email address", field=["emailConsent"])
    contact = vault.new_contact(
        tenant_id,
        display_name=name,
        email=email_norm,
        phone=phone_norm,
        source=source,
        sms_consent=sms_consent,
        email_consent=email_consent,
        tags=_clean_tags(tags),
    )
    clash = await uow.contacts.exists_with(email_bidx=contact.email_bidx, phone_bidx=contact.phone_bidx)
    if clash is not None:
        raise Conflict(f"A contact with this {clash} already exists", field=[clash])
    return await uow.contacts.add(tenant_id, contact)


async def list_contacts(
    uow: UnitOfWork, vault: PiiVault, actor: Actor, *, page: PageRequest, search: str | None
) -> Page[Contact]:
    """Search: an email or phone number matches exactly (blind index); anything else is a name prefix."""
    tenant_id = require_read(actor)
    term = (search or "").strip()
    if not term:
        return await uow.contacts.page(page)
    if len(term) > 200:
        raise InvalidInput("Search is at most 200 characters", field=["search"])
    if looks_like_email(term):
        try:
            email = normalize_email(term)
        except InvalidInput:
            return Page(items=(), cursors=(), has_next=False, has_previous=False)
        return await uow.contacts.page(page, email_bidx=vault.index(tenant_id, "email", email))
    phone = try_normalize_phone(term, default_region=vault.default_region)
    if phone is not None:
        return await uow.contacts.page(page, phone_bidx=vault.index(tenant_id, "phone", phone))
    return await uow.contacts.page(page, name_prefix=" ".join(term.split()).lower())
