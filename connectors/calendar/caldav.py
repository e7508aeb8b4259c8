"""CalendarConnector on the caldav library's async client (caldav.aio, caldav 3.x).

Writes are conditional PUTs sent through the client's own request methods rather than
`Calendar.save_event`: the high-level save cannot send ``If-None-Match: *`` or ``If-Match``
and, by default, bumps SEQUENCE and merges on Schedule-Tag servers; the service owns SEQUENCE
and needs a stale write refused. Reads use the client's sync-collection, PROPFIND and REPORT
methods with bodies built from the library's element classes, and its multistatus parsers.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urljoin, urlsplit

from caldav.aio import AsyncDAVClient, DAVResponse
from caldav.elements import cdav, dav

from connectors.calendar.base import CalendarAccount, Changes, RemoteObject
from connectors.calendar.caldav_transport import (
    CaldavTransport,
    raise_for_status,
    response_etag,
)
from connectors.calendar.errors import CalendarAuthError, CalendarRejected

# Object names kept as they are; anything else is hashed. Lower case only, so that two UIDs that
# differ in case never meet on a case-insensitive server file system.
_PLAIN_UID = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}")
# Characters left unescaped in an href path (RFC 3986 pchar, less "%").
_PATH_SAFE = "/-._~!$&'()*+,;=:@"
# A last path segment that canonical_path leaves as it is and that resolves to itself: only
# unescaped pchar characters, no "%", no "/", no ";" (urljoin reads what follows as parameters),
# and not "." or "..".
_PLAIN_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9\-._~!$&'()*+,=:@]+")
# A server that truncates sync replies over and over is misbehaving; stop and list fully instead.
_MAX_SYNC_PAGES = 50
# Hrefs per calendar-multiget REPORT: one request for any ordinary change set, bounded bodies for
# a full listing of a large calendar.
_MULTIGET_BATCH = 1000


def canonical_path(path: str) -> str:
    """One percent-encoded spelling of a server path, so hrefs compare as strings."""
    return quote(unquote(path), safe=_PATH_SAFE)


def object_name(uid: str) -> str:
    """The object's file name for `uid`: the same for every retry, safe in any URL."""
    if _PLAIN_UID.fullmatch(uid):
        return f"{uid}.ics"
    return f"h-{hashlib.sha256(uid.encode('utf-8')).hexdigest()[:40]}.ics"


def crlf(text: str) -> bytes:
    """iCalendar text with CRLF line ends (XML parsing and the library both turn them into LF)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def quoted_etag(etag: str) -> str:
    """An ETag as If-Match wants it, quotes and all."""
    etag = etag.strip()
    return etag if etag.startswith(('"', "W/")) else f'"{etag}"'


@dataclass
class _Listing:
    """Hrefs with their ETags (None: not reported), hrefs deleted, and the token after them; with
    the data of the objects whose data the server sent along (an incremental sync asks for it)."""

    etags: dict[str, str | None]
    deleted: list[str]
    sync_token: str | None
    data: dict[str, bytes] = field(default_factory=dict)


class _TokenRefused(Exception):
    """The server would not sync from the token (forgotten, invalid, or no sync support)."""


class CaldavConnector:
    """CalendarConnector for any CalDAV server, through `caldav.aio.AsyncDAVClient`."""

    name = "caldav"

    def __init__(self, accounts: Sequence[CalendarAccount] = (), *, timeout: float = 30.0) -> None:
        self._transport = CaldavTransport(accounts, timeout)

    # ---- names -------------------------------------------------------------------------------

    @staticmethod
    def _collection(calendar_url: str) -> tuple[str, str]:
        """(absolute URL, canonical path) of the collection, both ending in "/"."""
        try:
            parts = urlsplit(calendar_url)
            parts.port  # noqa: B018 - raises on a port that is no number
        except ValueError:  # "http://[", "http://host:port/" and the like: no URL at all
            raise CalendarRejected(f"not an http(s) calendar URL: {calendar_url!r}", url=calendar_url) from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CalendarRejected(f"not an http(s) calendar URL: {calendar_url!r}", url=calendar_url)
        path = canonical_path(parts.path.rstrip("/") + "/")
        return f"{parts.scheme}://{parts.netloc}{path}", path

    def _resolve(self, calendar_url: str, href: str) -> tuple[str, str]:
        """(absolute URL, canonical href) of an object; refuses hrefs on another server."""
        base, _ = self._collection(calendar_url)
        try:
            url = urljoin(base, href)
            parts, origin = urlsplit(url), urlsplit(base)
        except ValueError:  # a malformed href from the server
            raise CalendarRejected(f"href {href!r} is not a URL", url=base) from None
        if (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
            # Never send this calendar's credentials to another host.
            raise CalendarRejected(f"href {href!r} is not on the server of {calendar_url}", url=url)
        path = canonical_path(parts.path)
        return f"{parts.scheme}://{parts.netloc}{path}", path

    def object_href(self, calendar_url: str, uid: str) -> str:
        """The href `put` uses for `uid` in this calendar."""
        return self._collection(calendar_url)[1] + object_name(uid)

    # ---- single objects -------------------------------------------------------------------------

    async def put(self, calendar_url: str, uid: str, data: bytes, etag: str | None,
                  href: str | None = None) -> tuple[str, str | None]:
        """Create (etag None) or conditionally replace the object for `uid`, at `href` when given;
        (href, new ETag)."""
        url, href = self._resolve(calendar_url, href or self.object_href(calendar_url, uid))
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        if etag is None:
            headers["If-None-Match"] = "*"
        else:
            headers["If-Match"] = quoted_etag(etag)
        response = await self._transport.request(url, "PUT", data, headers)
        raise_for_status(response, url, "PUT")
        return href, response_etag(response)

    async def get(self, calendar_url: str, href: str) -> RemoteObject | None:
        """The object at `href`, or None on 404 (or 410)."""
        url, href = self._resolve(calendar_url, href)

        async def fetch(client: AsyncDAVClient) -> RemoteObject | None:
            response = await client.request(url, "GET")
            if response.status in (404, 410):
                return None
            raise_for_status(response, url, "GET")
            return RemoteObject(href, response_etag(response), crlf(response.raw))

        return await self._transport.call(url, "GET", fetch)

    async def delete(self, calendar_url: str, href: str, etag: str | None) -> None:
        """Remove the object at `href` (If-Match `etag` when given); gone already counts as done."""
        url, _ = self._resolve(calendar_url, href)
        headers = {"If-Match": quoted_etag(etag)} if etag is not None else {}
        response = await self._transport.request(url, "DELETE", "", headers)
        if response.status in (404, 410):
            return
        raise_for_status(response, url, "DELETE")

    # ---- collections ----------------------------------------------------------------------------

    async def multiget(self, calendar_url: str, hrefs: Sequence[str]) -> list[RemoteObject]:
        """The objects at `hrefs`, in calendar-multiget REPORTs; hrefs with no object are left out."""
        url, _ = self._collection(calendar_url)
        wanted = list(dict.fromkeys(self._resolve(calendar_url, h)[1] for h in hrefs))
        found: list[RemoteObject] = []
        for start in range(0, len(wanted), _MULTIGET_BATCH):
            found.extend(await self._multiget_batch(url, wanted[start:start + _MULTIGET_BATCH]))
        return found

    async def _multiget_batch(self, url: str, hrefs: list[str]) -> list[RemoteObject]:
        body = cdav.CalendarMultiGet() + [dav.Prop() + [dav.GetEtag(), cdav.CalendarData()]]
        body += [dav.Href(value=h) for h in hrefs]

        async def report(client: AsyncDAVClient) -> list[RemoteObject]:
            # RFC 4791 section 7.9: no Depth header for calendar-multiget.
            response = await client.report(url, str(body), depth=None)
            raise_for_status(response, url, "REPORT calendar-multiget")
            return [
                RemoteObject(canonical_path(r.href), r.etag, crlf(r.calendar_data))
                for r in response.parse_calendar_query()
                if r.status == 200 and r.calendar_data is not None
            ]

        return await self._transport.call(url, "REPORT calendar-multiget", report)

    async def changes(self, calendar_url: str, sync_token: str | None,
                      known: Mapping[str, str | None] | None = None) -> Changes:
        """Changes since `sync_token`, falling back to a full listing; see CalendarConnector.changes."""
        url, path = self._collection(calendar_url)
        known = self._canonical_known(calendar_url, path, known or {})
        full = False
        try:
            if sync_token is None:
                raise _TokenRefused()
            # The change set since a token is small: its data comes with the listing where the
            # server sends it (Radicale does; Xandikos answers 404 for the property), and only the
            # rest is fetched by multiget. A listing from no token holds every object: ETags only.
            listing = await self._sync(url, sync_token, with_data=True)
        except _TokenRefused:
            full = True
            listing = await self._full_listing(url)
        deleted = set(listing.deleted)
        if full:
            deleted |= known.keys() - listing.etags.keys()
        wanted = [h for h, etag in listing.etags.items() if etag is None or known.get(h) != etag]
        changed = [RemoteObject(h, listing.etags[h], listing.data[h]) for h in wanted if h in listing.data]
        missing = [h for h in wanted if h not in listing.data]
        if missing:
            changed += await self.multiget(url, missing)
        # An href listed but gone by the time of the multiget was deleted in between.
        fetched = {o.href for o in changed}
        deleted |= {h for h in wanted if h not in fetched and (h in known or not full)}
        return Changes(listing.sync_token, changed, sorted(deleted), full)

    def _canonical_known(self, calendar_url: str, path: str, known: Mapping[str, str | None]) -> dict[str, str | None]:
        """`known` keyed by canonical href. The hrefs the service stores are canonical already (the
        connector gave them out): a plain name right in the collection is kept as it is, and only
        other hrefs go through `_resolve`, which would give back the same string for those."""
        out: dict[str, str | None] = {}
        start = len(path)
        for href, etag in known.items():
            if href.startswith(path) and _PLAIN_NAME.fullmatch(href, start):
                out[href] = etag
            else:
                out[self._resolve(calendar_url, href)[1]] = etag
        return out

    async def _full_listing(self, url: str) -> _Listing:
        """Every object with its ETag: by sync-collection from no token, else by PROPFIND."""
        try:
            return await self._sync(url, None)
        except _TokenRefused:
            pass

        async def propfind(client: AsyncDAVClient) -> _Listing:
            response = await client.propfind(url, props=["{DAV:}getetag", "{DAV:}resourcetype"], depth=1)
            raise_for_status(response, url, "PROPFIND")
            own = canonical_path(urlsplit(url).path)
            etags, found = {}, False
            for result in response.results or []:
                href = canonical_path(result.href)
                if result.status != 200:
                    continue
                if href.rstrip("/") == own.rstrip("/"):
                    found = True
                elif not href.endswith("/"):
                    etags[href] = result.properties.get("{DAV:}getetag")
            if not found:
                # Xandikos answers for a missing collection with a 207 holding one 404.
                raise CalendarRejected(f"PROPFIND {url}: no such calendar", url=url, status=404)
            return _Listing(etags, [], None)

        return await self._transport.call(url, "PROPFIND", propfind)

    async def _sync(self, url: str, sync_token: str | None, with_data: bool = False) -> _Listing:
        """RFC 6578 sync-collection from `sync_token` ("" for everything), following truncation;
        `with_data` asks for the objects' calendar-data too.

        Raises _TokenRefused when the server will not sync from it: that covers a forgotten or
        invalid token (403 on Radicale, 412 on Xandikos, 409 elsewhere, with DAV:valid-sync-token)
        and servers without the report (400/403/405/501).
        """
        etags: dict[str, str | None] = {}
        data: dict[str, bytes] = {}
        deleted: set[str] = set()
        token = sync_token
        for _ in range(_MAX_SYNC_PAGES):
            page, token, truncated = await self._sync_page(url, token, with_data)
            for href, etag in page.etags.items():
                etags[href] = etag
                data.pop(href, None)
                deleted.discard(href)
            data.update(page.data)
            for href in page.deleted:
                etags.pop(href, None)
                data.pop(href, None)
                deleted.add(href)
            if not truncated:
                return _Listing(etags, sorted(deleted), token, data)
        raise _TokenRefused()

    async def _sync_page(self, url: str, sync_token: str | None, with_data: bool = False) -> tuple[_Listing, str, bool]:
        props = [_GETETAG, _CALENDAR_DATA] if with_data else [_GETETAG]

        async def report(client: AsyncDAVClient) -> tuple[_Listing, str | None, bool]:
            response = await client.sync_collection(url, sync_token=sync_token or "", props=props)
            return self._parse_sync(url, response)

        try:
            listing, token, truncated = await self._transport.call(url, "REPORT sync-collection", report)
        except CalendarAuthError as exc:
            if exc.status != 403:
                raise
            raise _TokenRefused() from exc
        except CalendarRejected as exc:
            raise _TokenRefused() from exc
        if not token:
            raise _TokenRefused()  # a 207 without a token: the server does not really sync
        return listing, token, truncated

    @staticmethod
    def _parse_sync(url: str, response: DAVResponse) -> tuple[_Listing, str | None, bool]:
        raise_for_status(response, url, "REPORT sync-collection")
        result = response.parse_sync_collection()
        own = canonical_path(urlsplit(url).path).rstrip("/")
        etags, data = {}, {}
        for item in result.changed:
            href = canonical_path(item.href)
            if href.rstrip("/") != own and not href.endswith("/"):
                etags[href] = item.etag
                # Only with an ETag: the object must be recorded as the version whose data this is.
                if item.calendar_data and item.etag and item.status == 200:
                    data[href] = crlf(item.calendar_data)
        deleted = [canonical_path(h) for h in result.deleted]
        return _Listing(etags, deleted, result.sync_token, data), result.sync_token, result.truncated

    async def ensure_calendar(self, calendar_url: str, display_name: str | None = None) -> bool:
        """MKCALENDAR unless the collection exists; True when it was created now."""
        url, _ = self._collection(calendar_url)
        kinds = await self._resource_types(url)
        if kinds is not None:
            if _CALENDAR not in kinds:
                raise CalendarRejected(f"{url} exists but is not a calendar collection", url=url)
            return False
        body = ""
        if display_name:
            body = str(cdav.Mkcalendar() + [dav.Set() + [dav.Prop() + [dav.DisplayName(display_name)]]])
        response = await self._transport.request(url, "MKCALENDAR", body, {"Content-Type": _XML} if body else {})
        if response.status == 405:
            return False  # made by someone else in the meantime
        raise_for_status(response, url, "MKCALENDAR")
        return True

    async def _resource_types(self, url: str) -> list[str] | None:
        """The DAV:resourcetype of `url`, or None when nothing is there."""

        async def propfind(client: AsyncDAVClient) -> list[str] | None:
            response = await client.propfind(url, props=["{DAV:}resourcetype"], depth=0)
            if response.status == 404:
                return None
            raise_for_status(response, url, "PROPFIND")
            # Xandikos answers a missing resource with a 207 whose one response is a 404.
            for result in response.results or []:
                if result.status == 200 and canonical_path(result.href).rstrip("/") == urlsplit(url).path.rstrip("/"):
                    kinds = result.properties.get("{DAV:}resourcetype")
                    return kinds if isinstance(kinds, list) else []
            return None

        return await self._transport.call(url, "PROPFIND", propfind)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._transport.close()


_XML = 'application/xml; charset="utf-8"'
_GETETAG = "{DAV:}getetag"
_CALENDAR_DATA = "{urn:ietf:params:xml:ns:caldav}calendar-data"
_CALENDAR = "{urn:ietf:params:xml:ns:caldav}calendar"
