"""Meetings as iCalendar objects: shared copies, personal copies, feeds, and reading back.

Pure functions, no I/O. All iCalendar text is produced and read by the
`icalendar` library; this module only decides what goes where.

Shared copies (forum and room calendars, feeds) carry the physical rooms in
LOCATION and only links every reader may see. Personal copies (invitation
email, `/j/{token}/calendar.ics`) carry the participant's own join link where
calendar clients look for it: first line of DESCRIPTION, URL, CONFERENCE, and
for a remote participant LOCATION itself (Thunderbird links LOCATION only when
the whole value is a URL).

Text normalisation, applied to every user-supplied TEXT value before
rendering (see `clean_text`): CRLF and lone CR become LF; C0 control
characters other than LF and TAB, and DEL, are removed (RFC 5545 forbids them
in TEXT); U+FEFF is removed (icalendar drops it when decoding anyway), and
so are lone surrogates (JSON can carry them, UTF-8 cannot).
Names (CN parameters, room names in LOCATION, session titles and topics in
DESCRIPTION, the feed's name) get the same treatment, then LF and TAB become
a space (a name is one line), the value is stripped, and a backslash becomes
"/" (icalendar's reader unescapes backslashes in parameter values, which its
writer does not escape).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from icalendar import Calendar, Timezone, vCalAddress, vUri
from icalendar import Event as VEvent

from service.calendar._parse import MARKER, ParsedEvent, parse_event

PRODID = "-//forumbridge//forumbridge//EN"

PARTSTATS = frozenset({"NEEDS-ACTION", "ACCEPTED", "DECLINED", "TENTATIVE"})
STATUSES = frozenset({"CONFIRMED", "CANCELLED"})
METHODS = frozenset({"REQUEST", "CANCEL"})

# Fixed texts: Swedish, one language per field.
REMOTE_HINT = "Deltar du på distans: använd den personliga länken i din inbjudan."
PERSONAL_HINT = "Länken ovan är personlig – dela den inte."
GENERAL_LABEL = "Videomöte"
SIP_LABEL = "Rumssystem (SIP)"
PERSONAL_LABEL = "Din personliga länk"

__all__ = [
    "Event",
    "EventAttendee",
    "EventRoom",
    "EventSession",
    "ParsedEvent",
    "clean_text",
    "parse_event",
    "render_feed",
    "render_personal",
    "render_shared",
    "room_address",
]


@dataclass(frozen=True)
class EventRoom:
    """A booked room; `email` is its scheduling address if it has one (see `room_address`)."""

    name: str
    site: str
    city: str
    email: str | None = None


@dataclass(frozen=True)
class EventAttendee:
    """A person invited to the meeting."""

    name: str
    email: str
    partstat: str
    role: str = "REQ-PARTICIPANT"
    remote: bool = False

    def __post_init__(self) -> None:
        if self.partstat not in PARTSTATS:
            raise ValueError(f"partstat {self.partstat!r} is not one of {sorted(PARTSTATS)}")


@dataclass(frozen=True)
class EventSession:
    """One session of the meeting; aware datetimes."""

    title: str
    starts_at: datetime
    ends_at: datetime
    topic: str | None = None

    def __post_init__(self) -> None:
        _require_aware("session starts_at", self.starts_at)
        _require_aware("session ends_at", self.ends_at)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Everything a calendar object of one meeting says; keyword-only, datetimes aware."""

    uid: str
    sequence: int
    status: str
    title: str
    starts_at: datetime
    ends_at: datetime
    timezone: str
    organizer_name: str
    organizer_email: str
    dtstamp: datetime
    description: str | None = None
    rooms: tuple[EventRoom, ...] = ()
    sessions: tuple[EventSession, ...] = ()
    attendees: tuple[EventAttendee, ...] = ()
    url: str | None = None
    conference_url: str | None = None
    sip_uri: str | None = None
    created: datetime | None = None
    last_modified: datetime | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {sorted(STATUSES)}")
        for name in ("starts_at", "ends_at", "dtstamp", "created", "last_modified"):
            value = getattr(self, name)
            if value is not None:
                _require_aware(name, value)
        try:
            ZoneInfo(self.timezone)
        except (KeyError, ValueError) as error:  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"timezone {self.timezone!r} is not a known IANA zone") from error


# -- text safety ---------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n?")
# Lone surrogates too: JSON lets a client send "\ud800", and UTF-8 cannot encode it.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufeff\ud800-\udfff]")
_URI_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\ufeff\ud800-\udfff]")


def clean_text(value: str) -> str:
    """`value` as it can stand in an iCalendar TEXT value: LF line breaks, no control characters but LF and TAB."""
    return _FORBIDDEN.sub("", _LINE_BREAK.sub("\n", value))


def _clean_param(value: str) -> str:
    # A parameter value is one line; icalendar applies RFC 6868 for quotes.
    # Backslash becomes "/": icalendar writes it as is (RFC 5545 has no
    # escapes in parameters) but its reader unescapes it, so "a\," reads back
    # as "a," and a trailing one swallows the ":" that ends the parameters.
    text = clean_text(value).replace("\t", " ").replace("\\", "/")
    return " ".join(text.split("\n")).strip()


def _clean_uri(value: str) -> str:
    # A URI has no whitespace or controls; dropping them keeps a pasted link
    # working and makes a CRLF in it harmless.
    return _URI_FORBIDDEN.sub("", value)


def _address(email: str) -> str:
    return "mailto:" + _clean_uri(email)


# -- rooms ---------------------------------------------------------------------


def room_address(room: EventRoom, organizer_email: str) -> str:
    """The room's calendar address: its own email if it has one, else a stable one in the organizer's domain."""
    if room.email:
        return _clean_uri(room.email)
    domain = _clean_uri(organizer_email).rpartition("@")[2] or "forumbridge.invalid"
    slug = f"{_slug(room.site)}-{_slug(room.name)}".strip("-")
    if not slug:
        # A name with no ASCII letters at all (emoji, Cyrillic): a hash is still stable.
        slug = hashlib.sha256(f"{room.site}\n{room.name}".encode()).hexdigest()[:12]
    return f"room-{slug}@{domain}"


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def _rooms_location(rooms: tuple[EventRoom, ...]) -> str:
    return "; ".join(
        ", ".join(part for part in (_clean_param(room.name), _clean_param(room.city or room.site)) if part)
        for room in rooms
    )


# -- time zones ------------------------------------------------------------------


@lru_cache(maxsize=64)
def _vtimezone_bytes(zone: str, first_year: int, last_year: int) -> bytes:
    # from_tzinfo walks the zone's transitions: once per zone and span of years.
    return Timezone.from_tzinfo(
        ZoneInfo(zone), tzid=zone, first_date=date(first_year, 1, 1), last_date=date(last_year, 1, 1)
    ).to_ical()


# -- rendering ----------------------------------------------------------------------


def _new_calendar() -> Calendar:
    calendar = Calendar()
    calendar.add("PRODID", PRODID)
    calendar.add("VERSION", "2.0")
    calendar.add("CALSCALE", "GREGORIAN")
    return calendar


def _utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


def _session_lines(event: Event) -> list[str]:
    zone = ZoneInfo(event.timezone)
    first_day = event.starts_at.astimezone(zone).date()
    multi_day = event.ends_at.astimezone(zone).date() != first_day
    lines = []
    for session in sorted(event.sessions, key=lambda s: s.starts_at):
        start, end = session.starts_at.astimezone(zone), session.ends_at.astimezone(zone)
        when = f"{start:%H:%M}–{end:%H:%M}"
        if multi_day:
            when = f"{start:%Y-%m-%d} {when}"
        line = f"{when} {_clean_param(session.title)}"
        if session.topic:
            line += f" ({_clean_param(session.topic)})"
        lines.append(line)
    return lines


def _description(event: Event, link: str | None, hint: str | None) -> str:
    blocks = []
    head = [line for line in (link, hint) if line]
    if head:
        blocks.append("\n".join(head))
    sessions = _session_lines(event)
    if sessions:
        blocks.append("\n".join(sessions))
    text = clean_text(event.description or "")
    if text:
        blocks.append(text)
    return "\n\n".join(blocks)


def _person(attendee: EventAttendee) -> vCalAddress:
    return vCalAddress.new(
        _address(attendee.email),
        cn=_clean_param(attendee.name) or None,
        cutype="INDIVIDUAL",
        partstat=attendee.partstat,
        role=attendee.role,
        rsvp=True,
    )


def _room(room: EventRoom, organizer_email: str) -> vCalAddress:
    return vCalAddress.new(
        _address(room_address(room, organizer_email)),
        cn=_clean_param(room.name) or None,
        cutype="ROOM",
        partstat="ACCEPTED",
        role="NON-PARTICIPANT",
    )


def _conference(uri: str, label: str) -> vUri:
    # Not icalendar's Conference: its to_uri() joins the FEATURE list into one
    # string, which is then quoted as a single value ("AUDIO,VIDEO"). A list
    # parameter is written as the two values RFC 7986 means: FEATURE=AUDIO,VIDEO.
    return vUri(_clean_uri(uri), params={"VALUE": "URI", "FEATURE": ["AUDIO", "VIDEO"], "LABEL": label})


def _vevent(
    event: Event,
    *,
    location: str,
    description: str,
    url: str | None,
    conferences: list[vUri],
    attendees: list[vCalAddress],
    status: str,
) -> VEvent:
    zone = ZoneInfo(event.timezone)
    vevent = VEvent()
    vevent.add("UID", clean_text(event.uid).replace("\n", ""))
    vevent.add("SEQUENCE", event.sequence)
    vevent.add("DTSTAMP", _utc(event.dtstamp))
    if event.created is not None:
        vevent.add("CREATED", _utc(event.created))
    if event.last_modified is not None:
        vevent.add("LAST-MODIFIED", _utc(event.last_modified))
    vevent.add("DTSTART", event.starts_at.astimezone(zone))
    vevent.add("DTEND", event.ends_at.astimezone(zone))
    vevent.add("SUMMARY", clean_text(event.title))
    if location:
        vevent.add("LOCATION", location)
    if description:
        vevent.add("DESCRIPTION", description)
    if url:
        vevent.add("URL", _clean_uri(url))
    for conference in conferences:
        vevent.add("CONFERENCE", conference)
    vevent.add(
        "ORGANIZER",
        vCalAddress.new(_address(event.organizer_email), cn=_clean_param(event.organizer_name) or None),
    )
    for attendee in attendees:
        vevent.add("ATTENDEE", attendee)
    vevent.add("STATUS", status)
    vevent.add("TRANSP", "OPAQUE")
    vevent.add(MARKER, "TRUE")
    return vevent


def _shared_vevent(event: Event) -> VEvent:
    conferences = []
    if event.conference_url:
        conferences.append(_conference(event.conference_url, GENERAL_LABEL))
    if event.sip_uri:
        conferences.append(_conference(event.sip_uri, SIP_LABEL))
    has_remote = bool(event.conference_url or event.sip_uri) or any(a.remote for a in event.attendees)
    attendees = [_person(a) for a in event.attendees] + [_room(r, event.organizer_email) for r in event.rooms]
    return _vevent(
        event,
        location=_rooms_location(event.rooms),
        description=_description(
            event,
            _clean_uri(event.conference_url) if event.conference_url else None,
            REMOTE_HINT if has_remote else None,
        ),
        url=event.url,
        conferences=conferences,
        attendees=attendees,
        status=event.status,
    )


@lru_cache(maxsize=64)
def _vtimezone_text(zone: str, first_year: int, last_year: int) -> bytes:
    """The VTIMEZONE as `to_ical` writes the component parsed from `_vtimezone_bytes`."""
    return Timezone.from_ical(_vtimezone_bytes(zone, first_year, last_year)).to_ical()


def _to_bytes(calendar: Calendar, events: list[Event]) -> bytes:
    """The calendar with a VTIMEZONE for each TZID it uses (UTC needs none), before its other
    components (some parsers want a zone defined before it is used).

    Each zone covers the events' years with one year of margin on each side: their dates, and
    clients that look at the zone around them, with a handful of transitions. Its text is made
    once per process and spliced in: the same bytes as adding it as a component, without
    parsing and writing it again for every object.
    """
    zones = sorted(calendar.get_missing_tzids())
    text = calendar.to_ical()
    if not zones:
        return text
    blocks = []
    for zone in zones:
        years = [instant.astimezone(ZoneInfo(zone)).year
                 for event in events if event.timezone == zone for instant in (event.starts_at, event.ends_at)]
        blocks.append(_vtimezone_text(zone, min(years) - 1, max(years) + 2))
    # After the calendar's own properties: the first line that begins a component.
    at = text.find(b"\r\nBEGIN:", len(b"BEGIN:VCALENDAR")) + 2
    if at == 1:
        at = text.rindex(b"END:VCALENDAR")
    return text[:at] + b"".join(blocks) + text[at:]


def render_shared(event: Event) -> bytes:
    """The meeting as every reader of a forum or room calendar may see it: no personal link."""
    calendar = _new_calendar()
    calendar.add_component(_shared_vevent(event))
    return _to_bytes(calendar, [event])


def render_personal(
    event: Event, attendee_email: str, join_url: str | None, method: str | None = None
) -> bytes:
    """The participant's own copy with their join link; `method` "REQUEST" or "CANCEL" makes it an iMIP message."""
    if method is not None and method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {sorted(METHODS)}")
    wanted = attendee_email.strip().lower()
    attendee = next((a for a in event.attendees if a.email.strip().lower() == wanted), None)
    if attendee is None:
        raise ValueError(f"{attendee_email!r} is not an attendee of {event.uid!r}")
    link = _clean_uri(join_url) if join_url else None

    conferences = [_conference(link, PERSONAL_LABEL)] if link else []
    if event.sip_uri:
        conferences.append(_conference(event.sip_uri, SIP_LABEL))
    if method == "CANCEL":
        # RFC 5546 CANCEL names the attendees it concerns: this one.
        attendees = [_person(attendee)]
    else:
        attendees = [_person(a) for a in event.attendees] + [_room(r, event.organizer_email) for r in event.rooms]
    vevent = _vevent(
        event,
        location=link if link and attendee.remote else _rooms_location(event.rooms),
        description=_description(event, link, PERSONAL_HINT if link else None),
        url=link or event.url,
        conferences=conferences,
        attendees=attendees,
        status="CANCELLED" if method == "CANCEL" else event.status,
    )
    calendar = _new_calendar()
    if method is not None:
        calendar.add("METHOD", method)
    calendar.add_component(vevent)
    return _to_bytes(calendar, [event])


def render_feed(events: list[Event] | tuple[Event, ...], name: str) -> bytes:
    """One subscription calendar of many meetings, in their shared form."""
    calendar = _new_calendar()
    calendar.calendar_name = _clean_param(name)  # NAME (RFC 7986) and X-WR-CALNAME
    for event in events:
        calendar.add_component(_shared_vevent(event))
    return _to_bytes(calendar, list(events))


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")
