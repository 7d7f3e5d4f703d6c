from __future__ import annotations

from collections.abc import Sequence

from domain import contacts
from domain.model import Contact
from resolvers.context import Context


async def create_contact(
    ctx: Context,
    *,
    display_name: str,
    email: str | None,
    phone: str | None,
    sms_consent: bool,
    email_consent: bool,
    tags: Sequence[str] | None,
) -> Contact:
    async with ctx.transaction() as uow:
        return await contacts.create_contact(
            uow,
            ctx.services.vault,
            ctx.require_actor,
            display_name=display_name,
            email=email,
            phone=phone,
            sms_consent=sms_consent,
            email_consent=email_consent,
            tags=tags,
        )
