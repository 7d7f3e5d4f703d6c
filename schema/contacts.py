"""Contacts: PII is only ever shown masked."""

from __future__ import annotations

from datetime import datetime

import strawberry

from domain import model
from domain.pagination import Page
from schema.common import Node, PageInfo, UserError, to_global_id


@strawberry.type
class Contact(Node):
    id: strawberry.ID
    display_name: str
    email_masked: str | None
    phone_masked: str | None
    sms_consent: bool
    email_consent: bool
    tags: list[str]
    source: str
    last_visit_at: datetime | None
    created_at: datetime

    @classmethod
    def from_domain(cls, c: model.Contact) -> Contact:
        return cls(
            id=to_global_id("Contact", c.id),
            display_name=c.display_name,
            email_masked=c.email_masked,
            phone_masked=c.phone_masked,
            sms_consent=c.sms_consent,
            email_consent=c.email_consent,
            tags=list(c.tags),
            source=c.source,
            last_visit_at=c.last_visit_at,
            created_at=c.created_at,
        )


@strawberry.type
class ContactEdge:
    cursor: str
    node: Contact


@strawberry.type
class ContactConnection:
    edges: list[ContactEdge]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[model.Contact]) -> ContactConnection:
        return cls(
            edges=[
                ContactEdge(cursor=cursor.encode(), node=Contact.from_domain(c))
                for c, cursor in zip(page.items, page.cursors, strict=True)
            ],
            page_info=PageInfo.from_page(page),
        )


@strawberry.input
class CreateContactInput:
    display_name: str
    email: str | None = None
    phone: str | None = None
    sms_consent: bool | None = None
    email_consent: bool | None = None
    tags: list[str] | None = None


@strawberry.type
class CreateContactPayload:
    contact: Contact | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
