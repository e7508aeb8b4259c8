"""The caldav library's async clients, one per account, with every failure mapped to our exceptions.

All HTTP goes through `caldav.aio.AsyncDAVClient` (niquests underneath); nothing here or above
may let a caldav, niquests or lxml exception escape.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from caldav.aio import AsyncDAVClient, DAVResponse
from caldav.lib import error as dav_error

from connectors.calendar.base import CalendarAccount
from connectors.calendar.errors import (
    CalendarAuthError,
    CalendarError,
    CalendarPreconditionFailed,
    CalendarRejected,
    CalendarUidConflict,
    CalendarUnavailable,
)

T = TypeVar("T")

NO_UID_CONFLICT = "{urn:ietf:params:xml:ns:caldav}no-uid-conflict"
VALID_SYNC_TOKEN = "{DAV:}valid-sync-token"
_DAV_ERROR = "{DAV:}error"
_DAV_HREF = "{DAV:}href"
_DAV_DESCRIPTION = "{DAV:}responsedescription"


def choose_account(accounts: Sequence[CalendarAccount], url: str) -> CalendarAccount | None:
    """The account whose url_prefix is the longest prefix of `url`, or None."""
    matching = [a for a in accounts if url.startswith(a.url_prefix)]
    return max(matching, key=lambda a: len(a.url_prefix), default=None)


def preconditions_of(response: DAVResponse) -> tuple[str, ...]:
    """The precondition names of a DAV:error body (RFC 4918 section 16), if the body is one."""
    tree = response.tree
    if tree is None or tree.tag != _DAV_ERROR:
        return ()
    return tuple(child.tag for child in tree if isinstance(child.tag, str) and child.tag != _DAV_DESCRIPTION)


def _conflicting_href(response: DAVResponse) -> str | None:
    """RFC 4791 lets no-uid-conflict name the object that holds the UID already."""
    tree = response.tree
    if tree is None or tree.tag != _DAV_ERROR:
        return None
    for child in tree:
        if child.tag == NO_UID_CONFLICT:
            href = child.find(_DAV_HREF)
            return href.text if href is not None else None
    return None


def raise_for_status(response: DAVResponse, url: str, what: str) -> None:
    """Raise the error that a non-2xx answer means; return on 2xx."""
    status = response.status
    if 200 <= status < 300:
        return
    pre = preconditions_of(response)
    message = f"{what} {url}: {status} {response.reason}".rstrip()
    if pre:
        message += f" ({', '.join(pre)})"
    if NO_UID_CONFLICT in pre:
        raise CalendarUidConflict(message, href=_conflicting_href(response), url=url, status=status, preconditions=pre)
    if status == 412:
        raise CalendarPreconditionFailed(message, url=url, status=status, preconditions=pre)
    if status == 401 or (status == 403 and not pre):
        raise CalendarAuthError(message, url=url, status=status, preconditions=pre)
    # 501 Not Implemented says the server will never do this: a refusal, not an outage. 423 Locked
    # (RFC 4918) is a lock someone holds: Xandikos answers it for every write to a collection
    # whose git lock a crash left behind, until its operator removes the lock. Come back later.
    if status in (408, 423, 429) or (status >= 500 and status != 501):
        raise CalendarUnavailable(message, url=url, status=status, preconditions=pre)
    raise CalendarRejected(message, url=url, status=status, preconditions=pre)


def _translate(exc: Exception, url: str, what: str) -> CalendarError:
    """Map whatever the library or the HTTP stack raised to our family."""
    if isinstance(exc, dav_error.AuthorizationError):
        status = exc.status or 401
        pre = tuple(p for p in exc.preconditions if p != _DAV_DESCRIPTION)
        message = f"{what} {url}: {status} {exc.reason}"
        if status == 403 and pre:
            # A 403 that names a precondition (valid-sync-token, no-uid-conflict) is about the
            # request, not the credentials.
            error_class = CalendarUidConflict if NO_UID_CONFLICT in pre else CalendarRejected
            return error_class(f"{message} ({', '.join(pre)})", url=url, status=status, preconditions=pre)
        return CalendarAuthError(message, url=url, status=status, preconditions=pre)
    if isinstance(exc, NotImplementedError):
        # Raised when the server offers no auth scheme the library speaks.
        return CalendarAuthError(f"{what} {url}: {exc}", url=url)
    if isinstance(exc, dav_error.RateLimitError):
        return CalendarUnavailable(f"{what} {url}: rate limited ({exc.reason})", url=url, status=exc.status)
    # Connection refused or reset, timeouts, TLS failures, and answers the library cannot parse
    # (malformed XML, odd multistatus): nothing is wrong with the request, so try again later.
    return CalendarUnavailable(f"{what} {url}: {type(exc).__name__}: {exc}", url=url)


class CaldavTransport:
    """Hands out one AsyncDAVClient per account and runs library calls with error mapping."""

    def __init__(self, accounts: Sequence[CalendarAccount], timeout: float) -> None:
        self._accounts = tuple(accounts)
        self._timeout = timeout
        self._clients: dict[CalendarAccount | None, AsyncDAVClient] = {}
        self._first_contact: dict[int, asyncio.Lock] = {}
        self._contacted: set[int] = set()

    def client_for(self, url: str) -> AsyncDAVClient:
        """The client holding the credentials for `url` (anonymous when no account matches)."""
        account = choose_account(self._accounts, url)
        client = self._clients.get(account)
        if client is None:
            client = self._clients[account] = self._new_client(account, url)
        return client

    def _new_client(self, account: CalendarAccount | None, url: str) -> AsyncDAVClient:
        parts = urlsplit(url)
        return AsyncDAVClient(
            url=account.url_prefix if account else f"{parts.scheme}://{parts.netloc}/",
            username=(account.username or None) if account else None,
            password=(account.password or None) if account else None,
            ssl_verify_cert=account.verify_tls if account else True,
            timeout=self._timeout,  # type: ignore[arg-type]  # niquests takes a float
            # Retry policy belongs to the outbox, not to a sleep inside a request.
            rate_limit_handle=False,
            enable_rfc6764=False,
            # Said outright so that a 401 (a wrong password) does not make the client close and
            # rebuild its HTTP session "in case HTTP/2 was the problem", cutting off every other
            # request in flight on it. HTTP/2 is still used where the server offers it.
            features={"http.multiplexing": {"support": "unsupported"}},
        )

    async def call(self, url: str, what: str, action: Callable[[AsyncDAVClient], Awaitable[T]]) -> T:
        """Run `action` with the client for `url`; any exception leaves as a CalendarError."""
        try:
            client = self.client_for(url)
        except Exception as exc:  # noqa: BLE001 - a URL the HTTP stack cannot take
            raise _translate(exc, url, what) from exc
        if id(client) in self._contacted or client.password is None:
            return await self._attempt(client, url, what, action)
        # The client learns the auth scheme from its first 401 and keeps it in shared state;
        # requests racing through that (the outbox and the sync loop start together) see each
        # other's half-built state and fail with 401s and closed pools. So until the server has
        # answered once, requests go one at a time.
        async with self._first_contact.setdefault(id(client), asyncio.Lock()):
            try:
                result = await self._attempt(client, url, what, action)
            except CalendarUnavailable:
                raise  # no answer: the next request has to make first contact again
            except CalendarError:
                self._contacted.add(id(client))
                raise
            self._contacted.add(id(client))
            return result

    @staticmethod
    async def _attempt(client: AsyncDAVClient, url: str, what: str,
                       action: Callable[[AsyncDAVClient], Awaitable[T]]) -> T:
        try:
            return await action(client)
        except CalendarError:
            raise
        except Exception as exc:  # noqa: BLE001 - the contract: nothing but our family leaves
            raise _translate(exc, url, what) from exc

    async def request(self, url: str, method: str, body: str | bytes = "",
                      headers: dict[str, str] | None = None) -> DAVResponse:
        """One plain request through the library's client; the answer is returned whatever its status."""
        return await self.call(url, method, lambda c: c.request(url, method, body, headers))  # type: ignore[arg-type]

    async def close(self) -> None:
        """Close every client's connections."""
        clients, self._clients = list(self._clients.values()), {}
        self._first_contact, self._contacted = {}, set()
        for client in clients:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def response_etag(response: DAVResponse) -> str | None:
    """The answer's ETag header, or None."""
    headers = response.headers
    etag = headers.get("ETag") if headers is not None else None
    if not etag:
        return None
    # Bedework percent-encodes the quotes and then refuses that spelling in If-Match (the
    # library works around it the same way); an entity-tag never starts with "%".
    return unquote(etag) if etag.startswith(("%22", "W/%22")) else etag
