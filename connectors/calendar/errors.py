"""The calendar connectors' exception family: the only exceptions that leave connectors/calendar/."""
from __future__ import annotations


class CalendarError(Exception):
    """Base of every calendar connector error; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 preconditions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        # Clark-notation names from a DAV:error body (RFC 4918 section 16), e.g.
        # "{urn:ietf:params:xml:ns:caldav}no-uid-conflict".
        self.preconditions = preconditions


class CalendarAuthError(CalendarError):
    """The server refused our credentials or our rights (401, or a 403 that names no precondition): fix the account."""


class CalendarUnavailable(CalendarError):
    """The server could not be reached, timed out, answered 5xx/408/429 or answered something unusable: retry later."""


class CalendarRejected(CalendarError):
    """The server refused the request itself (a 4xx); sending it again unchanged will fail again."""


class CalendarPreconditionFailed(CalendarRejected):
    """412: the object exists already (create) or was changed or removed by someone else (update, delete).

    Fetch the current version, reconcile, and retry with its ETag. Catch it before CalendarRejected.
    """


class CalendarUidConflict(CalendarRejected):
    """Another object in the calendar, under another name, already holds this UID (CALDAV:no-uid-conflict).

    Retrying under our name cannot succeed; find the other object (by UID) and adopt or remove it.
    `href` is that object when the server says so (Radicale and Xandikos do not).
    """

    def __init__(self, message: str, *, href: str | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.href = href
