"""Who may do what. Checked by use cases, so resolvers, jobs and the CLI share the rules."""

from __future__ import annotations

import uuid

from domain.errors import Forbidden
from domain.model import Actor, ApiScope, Role

# Roles that may change tenant data; SUPPORT and OPS look, they do not touch.
WRITERS = frozenset({Role.OWNER_ADMIN, Role.STAFF})
ADMINS = frozenset({Role.OWNER_ADMIN})


def tenant_of(actor: Actor) -> uuid.UUID:
    if actor.tenant_id is None:
        raise Forbidden("Choose a tenant with the X-Tenant-Id header")
    return actor.tenant_id


def require_read(actor: Actor) -> uuid.UUID:
    tenant_id = tenant_of(actor)
    if actor.scopes is not None and ApiScope.READ not in actor.scopes and ApiScope.WRITE not in actor.scopes:
        raise Forbidden("This API key has no READ scope")
    return tenant_id


def require_write(actor: Actor) -> uuid.UUID:
    tenant_id = tenant_of(actor)
    if actor.scopes is not None and ApiScope.WRITE not in actor.scopes:
        raise Forbidden("This API key has no WRITE scope")
    if actor.role not in WRITERS:
        raise Forbidden("Your role cannot change this tenant's data")
    return tenant_id


def require_admin(actor: Actor) -> uuid.UUID:
    tenant_id = require_write(actor)
    if actor.via_api_key:
        raise Forbidden("API keys cannot manage the tenant; sign in as an owner")
    if actor.role not in ADMINS:
        raise Forbidden("Only the tenant's owner/admin can do this")
    return tenant_id
