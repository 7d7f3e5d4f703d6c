"""The registry is the one list of providers: each adapter declares what it supports."""

from __future__ import annotations

from domain.model import Provider
from domain.providers import Capability
from integrations.registry import ProviderClients, ProviderSettings


def test_syncs_visit_providers_in_registry_order() -> None:
    registry = ProviderClients(ProviderSettings())
    assert registry.supporting(Capability.CALENDAR) == (
        Provider.SQUARE,
        Provider.ACUITY,
        Provider.GOOGLE,
        Provider.APPLE,
    )
    assert registry.supporting(Capability.INVENTORY) == (Provider.SQUARE, Provider.SHOPIFY)
    assert registry.adapter(Provider.HUBSPOT) is None


def test_connect_mode_follows_configuration() -> None:
    bare = ProviderClients(ProviderSettings())
    modes = {p: a.connect_mode() for p in Provider if (a := bare.adapter(p)) is not None}
    assert modes == {
        Provider.SQUARE: None,
        Provider.ACUITY: "form",
        Provider.GOOGLE: None,
        Provider.APPLE: "form",
        Provider.SHOPIFY: None,
    }
    configured = ProviderClients(
        ProviderSettings(
            square_client_id="sq",
            square_client_secret="s",
            acuity_client_id="ac",
            acuity_client_secret="s",
            shopify_client_id="sh",
            shopify_client_secret="s",
        )
    )
    modes_configured = {p: a.connect_mode() for p in Provider if (a := configured.adapter(p)) is not None}
    assert modes_configured == {
        **modes,
        Provider.SQUARE: "oauth",
        Provider.ACUITY: "oauth",
        Provider.SHOPIFY: "form",
    }


def test_only_providers_that_sign_webhooks_have_a_verifier() -> None:
    registry = ProviderClients(ProviderSettings(square_webhook_signature_key="k"))
    schemes = {p: w.scheme for p in Provider if (a := registry.adapter(p)) and (w := a.webhooks)}
    assert schemes == {Provider.SQUARE: "app", Provider.ACUITY: "account"}
