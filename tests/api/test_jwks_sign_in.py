"""Sign-in through a JWKS endpoint (how a Supabase project with asymmetric keys issues tokens)."""

from __future__ import annotations

import time
import uuid

import jwt

from brandvx.settings import Settings
from integrations.auth_jwt import mint_token
from tests.conftest import JWT_SECRET, app_client
from tests.unit.test_auth_jwt import JwksServer, Keys, jwks_server, keys  # noqa: F401 - fixtures


def _rs256(keys: Keys, user_id: str) -> str:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
        "email": "rs@example.test",
    }
    return jwt.encode(claims, keys.rsa_private, algorithm="RS256", headers={"kid": keys.rsa_kid})


async def test_jwks_tokens_sign_in_and_shared_secret_tokens_do_not(
    migrated: Settings, keys: Keys, jwks_server: JwksServer
) -> None:
    settings = migrated.model_copy(update={"jwt_secret": None, "jwks_url": jwks_server.url})
    user_id = str(uuid.uuid4())
    async with app_client(settings) as (_, http):
        token = _rs256(keys, user_id)
        created = await http.post(
            "/graphql",
            json={"query": 'mutation { createTenant(input: {name: "Jwks"}) { tenant { name } } }'},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 200
        assert created.json()["data"]["createTenant"]["tenant"] == {"name": "Jwks"}
        viewer = await http.post(
            "/graphql",
            json={"query": "{ viewer { userId email } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert viewer.json()["data"]["viewer"] == {"userId": user_id, "email": "rs@example.test"}

        hs256 = mint_token(JWT_SECRET, user_id=user_id)
        refused = await http.post(
            "/graphql", json={"query": "{ viewer { userId } }"}, headers={"Authorization": f"Bearer {hs256}"}
        )
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["message"] == "Invalid token: unsupported algorithm"
    assert jwks_server.requests == 1  # fetched once, then cached
