"""Apple Calendar: appointments from an iCloud account over CalDAV (Apple ID + app-specific password)."""

from integrations.apple.caldav_source import (
    ICLOUD_CALDAV_URL,
    PROVIDER_NAME,
    AppleCalendarSource,
    appointment_from_vevent,
    provider_error,
)

__all__ = [
    "ICLOUD_CALDAV_URL",
    "PROVIDER_NAME",
    "AppleCalendarSource",
    "appointment_from_vevent",
    "provider_error",
]
