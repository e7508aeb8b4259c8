"""The calendar connector port: what the service may ask of a CalDAV server, and what it gets back."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from connectors.calendar.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarPreconditionFailed,
    CalendarRejected,
    CalendarUidConflict,
    CalendarUnavailable,
)

__all__ = [
    "CalendarAccount", "CalendarConnector", "Changes", "RemoteObject",
    "CalendarError", "CalendarAuthError", "CalendarUnavailable", "CalendarRejected",
    "CalendarPreconditionFailed", "CalendarUidConflict",
]


@dataclass(frozen=True)
class RemoteObject:
    """One calendar object as the server holds it.

    `href` is the object's absolute path on the server, percent-encoded (``/cal/abc.ics``): the same
    spelling that `put`, `changes` and `multiget` return, so hrefs can be compared as strings.
    `etag` is the server's strong ETag, quotes included (``"abc"``), or None when the server gave none.
    `data` is the iCalendar text in UTF-8 with CRLF line ends.
    """

    href: str
    etag: str | None
    data: bytes


@dataclass(frozen=True)
class Changes:
    """What changed in one calendar since a sync token (or since what the caller `known`)."""

    # The token to store and pass to the next `changes`; None when the server keeps no tokens
    # (then every call is a full listing).
    sync_token: str | None
    # Objects that are new or whose ETag differs from the caller's `known` ETag, with their data.
    changed: list[RemoteObject] = field(default_factory=list)
    # Hrefs that are gone: those the server reported deleted since the token, or (full listing)
    # those in the caller's `known` that the listing no longer holds.
    deleted: list[str] = field(default_factory=list)
    # True when the token was missing, refused or unsupported and the whole collection was listed.
    # With `known` given, `changed` and `deleted` are still exact; without it `changed` is the whole
    # collection and `deleted` is empty, so the caller must treat every href it holds that is not
    # in `changed` as deleted.
    full: bool = False


@dataclass(frozen=True)
class CalendarAccount:
    """Credentials for every calendar URL that starts with `url_prefix` (the longest prefix wins)."""

    url_prefix: str
    username: str = ""
    password: str = field(default="", repr=False)
    verify_tls: bool = True


@runtime_checkable
class CalendarConnector(Protocol):
    """Reads and writes calendar objects in CalDAV collections.

    Every method raises only the `CalendarError` family: `CalendarAuthError` (fix the account),
    `CalendarUnavailable` (retry later), `CalendarRejected` and its subclasses
    `CalendarPreconditionFailed` and `CalendarUidConflict` (the request itself cannot succeed as it
    is). `calendar_url` is the collection's absolute URL; credentials are chosen by it.
    """

    def object_href(self, calendar_url: str, uid: str) -> str:
        """The href `put` uses for `uid` in this calendar: deterministic, so a retried create
        can never make a second copy. No I/O."""
        ...

    async def put(self, calendar_url: str, uid: str, data: bytes, etag: str | None,
                  href: str | None = None) -> tuple[str, str | None]:
        """Store one calendar object under `href`, or by default under the name derived from `uid`
        (a client may have filed our object under a name of its own); return (href, new ETag).

        `etag` None creates (``If-None-Match: *``); otherwise the write happens only if the stored
        object still has that ETag (``If-Match``). Raises `CalendarPreconditionFailed` when the object
        exists already (create) or was changed or deleted meanwhile (update), and `CalendarUidConflict`
        when another object in the calendar holds the same UID. The new ETag is None when the server
        sends none, which RFC 4791 requires when it stored something other than `data`: `get` it then.
        """
        ...

    async def get(self, calendar_url: str, href: str) -> RemoteObject | None:
        """The object at `href`, or None when there is none (404)."""
        ...

    async def delete(self, calendar_url: str, href: str, etag: str | None) -> None:
        """Remove the object at `href`; with `etag`, only if it is unchanged (``If-Match``).

        An object that is already gone (404) counts as deleted. Raises `CalendarPreconditionFailed`
        when it was changed since `etag`.
        """
        ...

    async def changes(self, calendar_url: str, sync_token: str | None,
                      known: Mapping[str, str | None] | None = None) -> Changes:
        """What changed in the calendar since `sync_token`, with the changed objects' data.

        `known` maps the hrefs the caller holds to the ETags it holds for them (None: unknown). It
        spares fetching objects the caller already has (our own writes coming back) and, on a full
        listing, lets the connector name the deleted hrefs.

        With a token: one RFC 6578 sync-collection REPORT (repeated while the server truncates it)
        asking for each changed object's ETag and calendar-data; then, for the changed hrefs whose
        ETag differs from `known` and whose data the server did not send along (not every server
        does), one calendar-multiget (one per 1000 hrefs, so in practice one). An href listed but
        gone by the multiget counts as deleted.
        Without a token, or when the server refuses it (forgotten or invalid token: 403/409/412 with
        DAV:valid-sync-token, or any other refusal) or cannot sync at all: a full listing (a
        sync-collection from an empty token, else PROPFIND Depth 1 for the ETags), then a multiget of
        what differs from `known`; `full` is True and `sync_token` the fresh token (None without sync).
        Raises `CalendarAuthError` on 401, `CalendarUnavailable`, and `CalendarRejected` when even the
        listing is refused (e.g. no such calendar).
        """
        ...

    async def multiget(self, calendar_url: str, hrefs: Sequence[str]) -> list[RemoteObject]:
        """The objects at `hrefs` (one calendar-multiget REPORT per 1000); hrefs with no object are left out."""
        ...

    async def ensure_calendar(self, calendar_url: str, display_name: str | None = None) -> bool:
        """Create the calendar collection (MKCALENDAR) unless it exists; True when it was created."""
        ...

    async def close(self) -> None:
        """Release the HTTP connections. The connector must not be used afterwards."""
        ...
