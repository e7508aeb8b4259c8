"""Reading one calendar object back, whoever wrote it (re-exported by `service.calendar.ical`)."""
from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr, rruleset
from icalendar import Calendar
from icalendar.cal.component import Component

# Marks objects we wrote, beside the UID suffix: a client may keep our UID
# while a server or another client drops unknown X- properties, or the reverse.
MARKER = "X-FORUMBRIDGE"
OUR_UID_SUFFIX = "@forumbridge"


# A VTIMEZONE block, and its TZID line when it is not folded.
_VTIMEZONE = re.compile(rb"^BEGIN:VTIMEZONE\r?\n.*?^END:VTIMEZONE\r?\n", re.S | re.M | re.I)
_TZID = re.compile(rb"^TZID:([^\r\n]*)\r?\n(?![ \t])", re.M | re.I)

# The occurrences of a recurring event that are read: from a month before the sync to two years
# after it, at most this many. A room's busy blocks are these occurrences.
RECUR_BEFORE = timedelta(days=31)
RECUR_AFTER = timedelta(days=731)
MAX_OCCURRENCES = 1000
# Rules repeating within the day are read as one span from their first to their last occurrence in
# the window: a room calendar holds such a series only by mistake, and the span can only block more.
_SUB_DAILY = {"SECONDLY", "MINUTELY", "HOURLY"}


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
    # A recurring event's occurrences in the window read (`RECUR_BEFORE` before the sync to
    # `RECUR_AFTER` after it) as (start, end) in UTC, in order, with its exceptions applied
    # (EXDATE, moved and cancelled instances); None for an event that does not recur.
    occurrences: tuple[tuple[datetime, datetime], ...] | None = None

    def spans(self) -> list[tuple[datetime, datetime]]:
        """What the event holds of a room's time: each occurrence, or its one span."""
        return list(self.occurrences) if self.occurrences is not None else [(self.starts_at, self.ends_at)]


def parse_event(data: bytes, default_zone: str = "Europe/Stockholm", at: datetime | None = None) -> ParsedEvent | None:
    """The master VEVENT of `data`, or None when it is not a readable event; never raises.

    Floating times and all-day dates are read in `default_zone`; an all-day
    event spans its whole days there. A recurring event's occurrences are read around `at`
    (default: now).
    """
    try:
        zone = ZoneInfo(default_zone)
        component = Calendar.from_ical(_without_known_zones(data))
        return _parse(component, zone, at or datetime.now(timezone.utc))
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


def _parse(component: Component, zone: tzinfo, at: datetime) -> ParsedEvent | None:
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
    ends_at = max(ends_at, starts_at)  # a DTEND before DTSTART is invalid: keep the event, zero length
    occurrences = None
    if recurring and masters:
        overrides = [v for v in vevents if "RECURRENCE-ID" in v and _text(v.get("UID")) == uid]
        try:
            occurrences = _occurrences(vevent, overrides, start_value, ends_at - starts_at, zone,
                                       at - RECUR_BEFORE, at + RECUR_AFTER)
        except Exception:  # noqa: BLE001 - a rule dateutil cannot read: the event still holds its first time
            occurrences = None
    organizer = vevent.get("ORGANIZER")
    return ParsedEvent(
        uid=uid,
        sequence=_int(vevent.get("SEQUENCE")),
        status=(_text(vevent.get("STATUS")) or "CONFIRMED").upper(),
        summary=_text(vevent.get("SUMMARY")),
        description=_text(vevent.get("DESCRIPTION")),
        location=_text(vevent.get("LOCATION")),
        starts_at=starts_at,
        ends_at=ends_at,
        all_day=all_day,
        recurring=recurring,
        transp=(_text(vevent.get("TRANSP")) or "OPAQUE").upper(),
        ours=MARKER in vevent or uid.lower().endswith(OUR_UID_SUFFIX),
        organizer_email=_email(organizer) if organizer is not None else None,
        attendees={
            _email(address): str(address.params.get("PARTSTAT", "NEEDS-ACTION")).upper()
            for address in _list(vevent.get("ATTENDEE"))
        },
        occurrences=occurrences,
    )


def _occurrences(master: Component, overrides: list[Component], start_value: date | datetime, length: timedelta,
                 zone: tzinfo, since: datetime, until: datetime) -> tuple[tuple[datetime, datetime], ...]:
    """The master's occurrences that overlap [since, until), in UTC, at most `MAX_OCCURRENCES`.

    RRULE, RDATE and EXDATE are read with dateutil, in the wall time of DTSTART's zone (a weekly
    10:00 stays at 10:00 across a DST change); each instance lasts as long as the master (RFC 5545
    3.8.5.3; whole days for an all-day event). An instance given its own VEVENT (RECURRENCE-ID)
    takes that one's times, or is dropped when it is cancelled or transparent.
    """
    first = _local(start_value, zone)
    days = length.days if not isinstance(start_value, datetime) else None

    def span(local: datetime) -> tuple[datetime, datetime]:
        begin = local.astimezone(timezone.utc)
        if days is not None:  # all day: whole days in the zone, whatever DST does
            return begin, datetime.combine(local.date() + timedelta(days=days), time(), tzinfo=zone).astimezone(timezone.utc)
        return begin, begin + length

    moved: list[tuple[datetime, datetime]] = []
    removed: set[datetime] = set()
    for v in overrides:
        recurrence = v["RECURRENCE-ID"].dt
        removed.add(_local(recurrence, zone).astimezone(timezone.utc))
        if (_text(v.get("STATUS")) or "").upper() == "CANCELLED" or (_text(v.get("TRANSP")) or "").upper() == "TRANSPARENT":
            continue
        if "DTSTART" in v:
            value = v["DTSTART"].dt
            begin = _instant(value, zone)[0]
            moved.append((begin, max(begin, _end(v, value, zone))))
    rules = [r for r in _list(master.get("RRULE"))]
    if any(str(freq).upper() in _SUB_DAILY for r in rules for freq in r.get("FREQ", [])):
        return _sub_daily_span(rules, first, span, since, until)
    series = rruleset()
    for rule in rules:
        series.rrule(rrulestr(_rule_text(rule, zone), dtstart=first))
    if not rules:
        series.rdate(first)  # RDATE alone: DTSTART is the first instance
    for listed in _list(master.get("RDATE")):
        for value in getattr(listed, "dts", []):
            moment = value.dt[0] if isinstance(value.dt, tuple) else value.dt  # a PERIOD: its start
            series.rdate(_local(moment, zone))
    for listed in _list(master.get("EXDATE")):
        for value in getattr(listed, "dts", []):
            series.exdate(_local(value.dt, zone))
    found: list[tuple[datetime, datetime]] = []
    # An occurrence that began up to one length before `since` still overlaps it.
    for local in series.xafter(since.astimezone(zone) - length - timedelta(days=1), inc=True):
        begin, end = span(local)
        if begin >= until or len(found) >= MAX_OCCURRENCES:
            break
        if end > since and begin not in removed:
            found.append((begin, end))
    found += [(b, e) for b, e in moved if e > since and b < until]
    return tuple(sorted(set(found))[:MAX_OCCURRENCES])


def _sub_daily_span(rules: list, first: datetime, span, since: datetime, until: datetime,  # noqa: ANN001
                    ) -> tuple[tuple[datetime, datetime], ...]:
    """One span for a series repeating within the day: from its first start to the end of its last
    occurrence (UNTIL), or to `until` when it has no UNTIL; clipped to the window."""
    start = first.astimezone(timezone.utc)
    ends = []
    for rule in rules:
        limit = rule.get("UNTIL")
        if not limit or "COUNT" in rule:
            ends = [until]
            break
        ends.append(span(_local(limit[0], first.tzinfo))[1])
    end = min(max(ends), until)
    begin = max(start, since)
    return ((begin, end),) if end > begin else ()


def _local(value: date | datetime, zone: tzinfo) -> datetime:
    """An aware date-time in `value`'s own zone (floating and DATE values in `zone`)."""
    if isinstance(value, datetime):
        return _aware(value, zone)
    return datetime.combine(value, time(), tzinfo=zone)


def _rule_text(rule: object, zone: tzinfo) -> str:
    """An RRULE for dateutil with an aware DTSTART: its UNTIL in UTC (a DATE or floating UNTIL
    is read in `zone`; a DATE UNTIL includes that whole day)."""
    parts = []
    for key, values in rule.items():  # type: ignore[attr-defined]
        if key.upper() == "UNTIL" and values:
            limit = values[0]
            if isinstance(limit, datetime):
                moment = _aware(limit, zone)
            else:
                moment = datetime.combine(limit + timedelta(days=1), time(), tzinfo=zone) - timedelta(seconds=1)
            parts.append("UNTIL=" + moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        else:
            parts.append(f"{key.upper()}=" + ",".join(_rule_value(v) for v in values))
    return ";".join(parts)


def _rule_value(value: object) -> str:
    to_ical = getattr(value, "to_ical", None)
    if to_ical is not None:
        out = to_ical()
        return out.decode() if isinstance(out, bytes) else str(out)
    return str(value)


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
