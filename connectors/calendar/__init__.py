"""Calendar connectors: the port, its exceptions, and the implementations by short name."""
from __future__ import annotations

from collections.abc import Sequence

from connectors.calendar.base import CalendarAccount, CalendarConnector, Changes, RemoteObject
from connectors.calendar.caldav import CaldavConnector
from connectors.calendar.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarPreconditionFailed,
    CalendarRejected,
    CalendarUidConflict,
    CalendarUnavailable,
)

# The short names used in configuration.
CONNECTORS: dict[str, type[CaldavConnector]] = {"caldav": CaldavConnector}


def make_connector(name: str, accounts: Sequence[CalendarAccount] = (), **options: object) -> CalendarConnector:
    """The connector registered as `name`, holding `accounts`; `options` go to its constructor (e.g. timeout)."""
    try:
        connector_class = CONNECTORS[name]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise ValueError(f"unknown calendar connector {name!r} (known: {known})") from None
    return connector_class(accounts, **options)  # type: ignore[arg-type]


__all__ = [
    "CONNECTORS", "make_connector",
    "CalendarAccount", "CalendarConnector", "Changes", "RemoteObject", "CaldavConnector",
    "CalendarError", "CalendarAuthError", "CalendarUnavailable", "CalendarRejected",
    "CalendarPreconditionFailed", "CalendarUidConflict",
]
