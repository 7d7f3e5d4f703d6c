"""Shopify: per-shop OAuth, inventory through the Admin REST API, webhook verification."""

from integrations.shopify.client import (
    DEFAULT_API_VERSION,
    INVENTORY_IDS_PER_CALL,
    PAGE_LIMIT,
    PRIVACY_TOPICS,
    SCOPES,
    WEBHOOK_TOPICS,
    InvalidShopDomain,
    ShopifyClient,
    ShopifyInventory,
    ShopifyShopOAuth,
    missing_scopes,
    next_page_params,
    normalize_shop,
    verify_webhook,
)

__all__ = [
    "DEFAULT_API_VERSION",
    "INVENTORY_IDS_PER_CALL",
    "PAGE_LIMIT",
    "PRIVACY_TOPICS",
    "SCOPES",
    "WEBHOOK_TOPICS",
    "InvalidShopDomain",
    "ShopifyClient",
    "ShopifyInventory",
    "ShopifyShopOAuth",
    "missing_scopes",
    "next_page_params",
    "normalize_shop",
    "verify_webhook",
]
