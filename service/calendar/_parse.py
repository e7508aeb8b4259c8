"""Reading one calendar object back, whoever wrote it (re-exported by `service.calendar.ical`)."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from icalendar import Calendar
from icalendar.cal.component import Component

# Marks objects we wrote, beside the UID suffix: a client may keep our UID
# while a server or another client drops unknown X- properties, or the reverse.
MARKER = "X-FORUMBRIDGE"
OUR_UID_SUFFIX = "@forumbridge"


# A VTIMEZONE block, and its TZID line when it is not folded.
_VTIMEZONE = re.compile(rb"^BEGIN:VTIMEZONE\r?\n.*?^END:VTIMEZONE\r?\n", re.S | re.M | re.I)
_TZID = re.compile(rb"^TZID:([^\r\n]*)\r?\n(?![ \t])", re.M | re.I)


@dataclass(frozen=True)
class ParsedEvent:
    """What the sync needs from a calendar object: times as aware UTC, attendees' PARTSTAT by lower-case email."""

    uid: str
    sequence: int
    status: str
    summary: str | None
    description: str | None
    location: str | None
    starts_at: datetime
    ends_at: datetime
    all_day: bool
    recurring: bool
    transp: str
    ours: bool
    organizer_email: str | None = None
    attendees: dict[str, str] = field(default_factory=dict)


def parse_event(data: bytes, default_zone: str = "Europe/Stockholm") -> ParsedEvent | None:
    """The master VEVENT of `data`, or None when it is not a readable event; never raises.

    Floating times and all-day dates are read in `default_zone`; an all-day
    event spans its whole days there.
    """
    try:
        zone = ZoneInfo(default_zone)
        component = Calendar.from_ical(_without_known_zones(data))
        return _parse(component, zone)
    except Exception:  # noqa: BLE001 - anything a foreign client wrote may be broken in any way
        return None


def _without_known_zones(data: bytes) -> bytes:
    """`data` without the VTIMEZONE blocks of zones in the tz database.

    For a TZID that names such a zone, icalendar takes the zone from the tz database whether or
    not the object defines it, so those blocks change nothing but the time to parse them (more
    than half of it for one of our events). Blocks of other zones stay.
    """
    def block(match: re.Match[bytes]) -> bytes:
        tzid = _TZID.search(match.group(0))
        return b"" if tzid is not None and _tz_database_has(tzid.group(1).strip()) else match.group(0)

    return _VTIMEZONE.sub(block, data) if b"VTIMEZONE" in data.upper() else data


@functools.lru_cache(maxsize=256)
def _tz_database_has(name: bytes) -> bool:
    try:
        ZoneInfo(name.decode("ascii"))
        return True
    except (ValueError, LookupError, OSError):
        return False


def _parse(component: Component, zone: tzinfo) -> ParsedEvent | None:
    vevents = component.walk("VEVENT")
    if not vevents:
        return None
    masters = [v for v in vevents if "RECURRENCE-ID" not in v]
    vevent = masters[0] if masters else vevents[0]
    uid = _text(vevent.get("UID"))
    if not uid or "DTSTART" not in vevent:
        return None
    start_value = vevent["DTSTART"].dt
    starts_at, all_day = _instant(start_value, zone)
    ends_at = _end(vevent, start_value, zone)
    recurring = "RRULE" in vevent or "RDATE" in vevent or any("RECURRENCE-ID" in v for v in vevents)
    organizer = vevent.get("ORGANIZER")
    return ParsedEvent(
        uid=uid,
        sequence=_int(vevent.get("SEQUENCE")),
        status=(_text(vevent.get("STATUS")) or "CONFIRMED").upper(),
        summary=_text(vevent.get("SUMMARY")),
        description=_text(vevent.get("DESCRIPTION")),
        location=_text(vevent.get("LOCATION")),
        starts_at=starts_at,
        ends_at=max(ends_at, starts_at),  # a DTEND before DTSTART is invalid: keep the event, zero length
        all_day=all_day,
        recurring=recurring,
        transp=(_text(vevent.get("TRANSP")) or "OPAQUE").upper(),
        ours=MARKER in vevent or uid.lower().endswith(OUR_UID_SUFFIX),
        organizer_email=_email(organizer) if organizer is not None else None,
        attendees={
            _email(address): str(address.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
            for address in _list(vevent.get("ATTENDEE"))
        },
    )


def _aware(value: datetime, zone: tzinfo) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=zone)  # floating: the reader's wall clock
    return value


def _instant(value: date | datetime, zone: tzinfo) -> tuple[datetime, bool]:
    """(aware UTC, whether it was a DATE)."""
    if isinstance(value, datetime):
        return _aware(value, zone).astimezone(timezone.utc), False
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=zone).astimezone(timezone.utc), True
    raise TypeError(f"not a date or date-time: {value!r}")


def _end(vevent: Component, start_value: date | datetime, zone: tzinfo) -> datetime:
    all_day = not isinstance(start_value, datetime)
    if "DTEND" in vevent:
        return _instant(vevent["DTEND"].dt, zone)[0]
    if "DURATION" in vevent:
        duration = vevent["DURATION"].dt
        if not isinstance(duration, timedelta):
            raise TypeError(f"not a duration: {duration!r}")
        if all_day:
            return _instant(start_value + timedelta(days=duration.days), zone)[0]
        # RFC 5545: days are nominal (same wall time on the next day), the rest
        # is exact. icalendar gives a timedelta, so PT24H reads as P1D.
        local = _aware(start_value, zone)
        wall = local.replace(tzinfo=None) + timedelta(days=duration.days)
        shifted = wall.replace(tzinfo=local.tzinfo).astimezone(timezone.utc)
        return shifted + timedelta(seconds=duration.seconds, microseconds=duration.microseconds)
    # RFC 5545 3.6.1: a DATE lasts one day, a DATE-TIME without an end is an instant.
    if all_day:
        return _instant(start_value + timedelta(days=1), zone)[0]
    return _instant(start_value, zone)[0]


def _list(value: object) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _email(address: object) -> str:
    text = str(address).strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:"):]
    return text.lower()


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # a property given twice: the first wins
        value = value[0] if value else None
        if value is None:
            return None
    return str(value)


def _int(value: object) -> int:
    try:
        return int(_text(value) or 0)
    except ValueError:
        return 0
