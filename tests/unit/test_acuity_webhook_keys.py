"""Which keys verify an Acuity webhook: any key the connection has (its API key, the OAuth app's
client secret); a delivery none of them verifies is left to domain.webhooks as a rate-limited nudge."""

from __future__ import annotations

from domain.providers import InboundWebhook
from domain.sync import TokenSet
from integrations.acuity import sign_webhook
from integrations.acuity.adapter import AcuityWebhooks

BODY = b"action=scheduled&id=123&calendarID=1&appointmentTypeID=2"


def _hook(key: str) -> InboundWebhook:
    return InboundWebhook(BODY, {"x-acuity-signature": sign_webhook(api_key=key, body=BODY)}, {})


def _verified(verifier: AcuityWebhooks, tokens: TokenSet, config: dict[str, str], key: str) -> bool:
    return any(verifier.verify(_hook(key), k) for k in verifier.signing_keys(tokens, config))


def test_an_api_key_connection_verifies_with_its_api_key_and_the_app_secret() -> None:
    verifier = AcuityWebhooks("app-secret")
    tokens, config = TokenSet(access_token="account-api-key"), {"mode": "basic", "user_id": "7"}
    assert verifier.signing_keys(tokens, config) == ("account-api-key", "app-secret")
    assert _verified(verifier, tokens, config, "account-api-key")
    assert _verified(verifier, tokens, config, "app-secret")
    assert not _verified(verifier, tokens, config, "someone-else")


def test_an_oauth_connection_verifies_with_the_client_secret_never_with_its_bearer_token() -> None:
    verifier = AcuityWebhooks("app-secret")
    tokens, config = TokenSet(access_token="oauth-bearer-token"), {}
    assert verifier.signing_keys(tokens, config) == ("app-secret",)
    assert _verified(verifier, tokens, config, "app-secret")
    assert not _verified(verifier, tokens, config, "oauth-bearer-token")
    # The account API key Acuity actually signs with is unknown to an OAuth app: not verified here.
    assert not _verified(verifier, tokens, config, "account-api-key")


def test_without_an_oauth_app_only_the_api_key_verifies() -> None:
    verifier = AcuityWebhooks(None)
    assert verifier.signing_keys(TokenSet(access_token="k"), {"mode": "basic"}) == ("k",)
    assert verifier.signing_keys(TokenSet(access_token="t"), {}) == ()
