"""Square: OAuth, Bookings as a calendar source, Catalog + Inventory as an inventory source, webhooks."""

from integrations.square.client import DEFAULT_BASE_URL, DEFAULT_SQUARE_VERSION, SCOPES, SquareClient
from integrations.square.sources import SquareCalendar, SquareInventory
from integrations.square.webhooks import SIGNATURE_HEADER, verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_SQUARE_VERSION",
    "SCOPES",
    "SIGNATURE_HEADER",
    "SquareCalendar",
    "SquareClient",
    "SquareInventory",
    "verify_webhook",
]
