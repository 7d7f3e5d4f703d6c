"""Google Calendar: OAuth 2.0 for a Google account and its calendar events (Calendar API v3)."""

from integrations.google.client import (
    CALENDAR_SCOPE,
    SCOPES,
    GoogleCalendarClient,
    GoogleCalendarSource,
)
from integrations.google.mapping import TIME_UNKNOWN

__all__ = ["CALENDAR_SCOPE", "SCOPES", "TIME_UNKNOWN", "GoogleCalendarClient", "GoogleCalendarSource"]
