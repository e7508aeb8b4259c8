"""Reading one calendar object back, whoever wrote it (re-exported by `service.calendar.ical`)."""
from __future__ import annotations

import bisect
import functools
import re
import warnings
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
# The furthest a RANGE=THISANDFUTURE change is followed in moving later instances.
MAX_SHIFT = timedelta(days=366)


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
    # For a recurring event whose series goes on past what was read: up to when it was read (the
    # window's end, or the start of the first occurrence left out when `MAX_OCCURRENCES` cut it short).
    read_until: datetime | None = None

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
    occurrences, read_until = None, None
    if recurring:
        overrides = [v for v in vevents if "RECURRENCE-ID" in v and _text(v.get("UID")) == uid]
        try:
            occurrences, read_until = _occurrences(vevent if masters else None, overrides, start_value,
                                                   ends_at - starts_at, zone, at - RECUR_BEFORE, at + RECUR_AFTER)
        except Exception:  # noqa: BLE001 - a rule dateutil cannot read: the event still holds its first time
            occurrences, read_until = None, None
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
        read_until=read_until,
    )


def _occurrences(master: Component | None, overrides: list[Component], start_value: date | datetime,
                 length: timedelta, zone: tzinfo, since: datetime, until: datetime,
                 ) -> tuple[tuple[tuple[datetime, datetime], ...], datetime | None]:
    """The occurrences that overlap [since, until), in UTC, at most `MAX_OCCURRENCES`, and up to when
    the series was read if it goes on beyond that (None when it ends within).

    RRULE, RDATE and EXDATE are read with dateutil, in the wall time of DTSTART's zone (a weekly
    10:00 stays at 10:00 across a DST change); DTSTART is always an occurrence; each instance lasts
    as long as the master (RFC 5545 3.8.5.3; whole days for an all-day event) and an RDATE period
    as long as itself. An instance given its own VEVENT (RECURRENCE-ID) takes that one's times, or
    is dropped when it is cancelled or transparent. One with RANGE=THISANDFUTURE also carries its
    change to every later instance (RFC 5545 3.2.13): its shift in wall time and its length, or its
    cancellation; a later instance with a VEVENT of its own keeps that one's times. `master` is None
    for an object that holds only such instances (a room invited to some occurrences of someone
    else's series).

    The expansion is bounded whatever the rule says: every rule ends at the window's end (also one
    with COUNT), a rule without COUNT starts its walk just before the window, and rules that repeat
    within the day are read as one span (`_sub_daily_span`). A rule that cannot be bounded so raises,
    and the event then holds its first time only (see `_parse`).
    """
    first = _local(start_value, zone)
    all_day = not isinstance(start_value, datetime)
    days = _whole_days(length) if all_day else 0

    def span(local: datetime, own_length: timedelta | None = None) -> tuple[datetime, datetime]:
        begin = local.astimezone(timezone.utc)
        if all_day:  # whole days in the zone, whatever DST does
            whole = days if own_length is None else _whole_days(own_length)
            return begin, datetime.combine(local.date() + timedelta(days=whole), time(), tzinfo=zone).astimezone(timezone.utc)
        return begin, begin + (length if own_length is None else own_length)

    found: set[tuple[datetime, datetime]] = set()
    removed: set[datetime] = set()
    # RANGE=THISANDFUTURE: from each such instance on, (shift in wall time, length or None, cancelled).
    ranges: list[tuple[datetime, timedelta, timedelta | None, bool]] = []
    series_zone = first.tzinfo or zone
    for v in overrides:
        # In the series' zone: a RECURRENCE-ID may be written in UTC for a series in local time.
        rid = _local(_like(v["RECURRENCE-ID"].dt, first), zone).astimezone(series_zone)
        removed.add(rid.astimezone(timezone.utc))
        off = (_text(v.get("STATUS")) or "").upper() == "CANCELLED" or (_text(v.get("TRANSP")) or "").upper() == "TRANSPARENT"
        value = v["DTSTART"].dt if "DTSTART" in v else None
        own: timedelta | None = None  # its own length, when it gives one
        if value is not None:
            begin = _instant(value, zone)[0]
            if "DTEND" in v or "DURATION" in v:
                own = max(_end(v, value, zone) - begin, timedelta(0))
            if not off:
                found.add((begin, begin + (length if own is None else own)))
        if (v["RECURRENCE-ID"].params.get("RANGE") or "").upper() == "THISANDFUTURE":
            moved_to = _local(value, zone).astimezone(series_zone) if value is not None else rid
            ranges.append((rid.astimezone(timezone.utc), _wall(moved_to) - _wall(rid), own, off))
    ranges.sort(key=lambda r: r[0])
    range_starts = [r[0] for r in ranges]
    # How far a shift may carry an instance into the window (a year at most: beyond that, unread).
    reach = min(max((abs(shift) for _, shift, _, _ in ranges), default=timedelta(0)), MAX_SHIFT)

    def changed(local: datetime) -> tuple[datetime, datetime] | None:
        """An instance as the latest THISANDFUTURE change at or before it leaves it (None: cancelled)."""
        at = bisect.bisect_right(range_starts, local.astimezone(timezone.utc)) - 1
        if at < 0:
            return span(local)
        _, shift, own, off = ranges[at]
        return None if off else span((_wall(local) + shift).replace(tzinfo=local.tzinfo), own)
    if master is None:
        return _window(found, since, until), None
    rules = [_rule_parts(r) for r in _list(master.get("RRULE"))]
    if any(_sub_daily(parts) for parts in rules):
        spans = _sub_daily_span(rules, first, length, since, until)
        goes_on = bool(spans) and spans[-1][1] >= until
        return _window(found | set(spans), since, until), until if goes_on else None
    series = rruleset()
    series.rdate(first)  # RFC 5545: DTSTART is the first instance, whether or not the rule matches it
    with warnings.catch_warnings():
        # An UNTIL beside a COUNT bounds the walk (dateutil reads both; it warns that RFC 5545 has one).
        warnings.simplefilter("ignore", DeprecationWarning)
        goes_on = False  # whether a rule has instances after the window's end
        for rule in rules:
            parts = _bounded(rule, first, until + reach)
            walked = rrulestr(_rule_text(parts, zone, until + reach),
                              dtstart=_walk_start(parts, first, length, since - reach))
            series.rrule(walked)
            if parts.get("UNTIL") and _until(parts["UNTIL"][0], zone) <= until:
                continue  # ends by its own UNTIL within the window
            if "COUNT" in parts:
                # Walked from DTSTART to the window's end: it goes on if its COUNT is not used up by then.
                # (Walked past the window for a THISANDFUTURE shift: instances after its end go on too.)
                goes_on |= walked.count() < int(str(parts["COUNT"][0])) or walked.after(until) is not None
            else:
                goes_on = True
    for listed in _list(master.get("RDATE")):
        for value in getattr(listed, "dts", []):
            if isinstance(value.dt, tuple):  # a PERIOD: its own start and end (or duration)
                begin_value, end_value = value.dt
                begin = _instant(begin_value, zone)[0]
                end = begin + end_value if isinstance(end_value, timedelta) else _instant(end_value, zone)[0]
                found.add((begin, max(begin, end)))
            else:
                series.rdate(_local(_like(value.dt, first), zone))
    for listed in _list(master.get("EXDATE")):
        for value in getattr(listed, "dts", []):
            series.exdate(_local(_like(value.dt, first), zone))
    # An occurrence that began up to one length before `since` still overlaps it.
    read_until = None
    limit = MAX_OCCURRENCES + len(overrides)
    for local in series.xafter(since.astimezone(zone) - length - timedelta(days=1) - reach, inc=True):
        begin = local.astimezone(timezone.utc)
        if begin >= until + reach or len(found) >= limit:
            read_until = until if begin >= until + reach else begin - reach
            break
        occurrence = changed(local) if begin not in removed else None
        if occurrence is not None and occurrence[1] > since:
            found.add(occurrence)
    if ranges and ranges[-1][3] and ranges[-1][0] < until:
        goes_on = False  # cancelled from there on: the series has ended
    if read_until is None and goes_on:
        read_until = until
    return _window(found, since, until), read_until


def _window(found: set[tuple[datetime, datetime]], since: datetime, until: datetime) -> tuple[tuple[datetime, datetime], ...]:
    return tuple(sorted(o for o in found if o[1] > since and o[0] < until)[:MAX_OCCURRENCES])


def _like(value: date | datetime, first: datetime) -> date | datetime:
    """An EXDATE, RDATE or RECURRENCE-ID given as a DATE for a series of DATE-TIMEs: that day at
    DTSTART's time (how clients that write so mean it)."""
    if isinstance(value, datetime) or not isinstance(first, datetime) or (first.hour, first.minute, first.second) == (0, 0, 0):
        return value
    return datetime.combine(value, first.timetz())


_UNIT = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600}


def _rule_parts(rule: object) -> dict[str, list]:
    """An RRULE's parts by upper-case name, each a list of its values."""
    return {str(k).upper(): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in rule.items()}  # type: ignore[attr-defined]


def _freq(parts: dict[str, list]) -> str:
    return str(parts.get("FREQ", [""])[0]).upper()


def _interval(parts: dict[str, list]) -> int:
    """INTERVAL, at least 1 (0 would repeat DTSTART for ever)."""
    interval = int(str(parts.get("INTERVAL", [1])[0]))
    if interval < 1:
        raise ValueError("INTERVAL must be at least 1")
    return interval


def _per_day(parts: dict[str, list]) -> int:
    """The most instances the BYHOUR, BYMINUTE and BYSECOND parts make of one day."""
    per_day = 1
    for key in ("BYHOUR", "BYMINUTE", "BYSECOND"):
        per_day *= max(1, len(parts.get(key, [])))
    return per_day


def _sub_daily(parts: dict[str, list]) -> bool:
    """A rule that repeats within the day: by its FREQ, or by more than 24 BYHOUR/BYMINUTE/BYSECOND
    combinations a day (which dateutil would walk instance by instance)."""
    return _freq(parts) in _UNIT or _per_day(parts) > 24


def _sub_daily_span(rules: list[dict[str, list]], first: datetime, length: timedelta, since: datetime,
                    until: datetime) -> list[tuple[datetime, datetime]]:
    """One span for a series repeating within the day, from its first start to the end of its
    last occurrence: by UNTIL (a DATE UNTIL includes its day), by COUNT where no BY part filters
    the steps (`COUNT - 1` steps of INTERVAL), else to `until`; clipped to the window. A room
    calendar holds such a series only by mistake, and the span can only block more than it."""
    start = first.astimezone(timezone.utc)
    ends = []
    for parts in rules:
        interval = _interval(parts)
        unit = _UNIT.get(_freq(parts))
        if parts.get("UNTIL"):
            ends.append(_until(parts["UNTIL"][0], first.tzinfo or timezone.utc) + length)
        elif parts.get("COUNT") and unit and not any(k.startswith("BY") for k in parts):
            ends.append(start + timedelta(seconds=(int(str(parts["COUNT"][0])) - 1) * interval * unit) + length)
        else:
            ends.append(until)
    begin, end = max(start, since), min(max(ends), until)
    return [(begin, end)] if end > begin else []


def _walk_start(parts: dict[str, list], first: datetime, length: timedelta, since: datetime) -> datetime:
    """Where dateutil starts walking a DAILY or WEEKLY rule without COUNT: a whole number of its
    periods after DTSTART, just before the window (a series from 1990 is not walked day by day since
    then). Rules with COUNT count from DTSTART, and MONTHLY and YEARLY ones are walked from it (a
    few steps a year)."""
    freq = _freq(parts)
    if "COUNT" in parts or freq not in ("DAILY", "WEEKLY"):
        return first
    period = timedelta(days=_interval(parts) * (7 if freq == "WEEKLY" else 1))
    wall_first = first.replace(tzinfo=None)
    wall_since = since.astimezone(first.tzinfo).replace(tzinfo=None) - length - timedelta(days=1)
    steps = (wall_since - wall_first) // period - 1
    if steps <= 0:
        return first
    return (wall_first + steps * period).replace(tzinfo=first.tzinfo)


# The most instances one period of a rule can hold, for the bound on COUNT (`_bounded`).
_PER_PERIOD = {"DAILY": 1, "WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}
_PERIOD_DAYS = {"DAILY": 1, "WEEKLY": 7, "MONTHLY": 28, "YEARLY": 365}
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def _bounded(parts: dict[str, list], first: datetime, until: datetime) -> dict[str, list]:
    """The rule's parts, made safe to walk: INTERVAL at least 1, a rule that can never match refused
    (dateutil would walk it to the year 9999), and a COUNT that cannot run out before the window's
    end dropped (it changes nothing there, and without it the walk may start near the window)."""
    freq, interval = _freq(parts), _interval(parts)
    if freq not in _PER_PERIOD:
        raise ValueError("a rule needs a known FREQ")
    if parts.get("BYMONTHDAY"):
        months = [int(str(m)) for m in parts.get("BYMONTH", [])] or list(range(1, 13))
        days = [int(str(d)) for d in parts["BYMONTHDAY"]]
        if not any(abs(d) <= _MONTH_DAYS.get(m, 0) for m in months for d in days if d != 0):
            raise ValueError("BYMONTHDAY names no day of the months the rule allows")
    if parts.get("COUNT"):
        count = int(str(parts["COUNT"][0]))
        periods = (count - 1) // (_PER_PERIOD[freq] * _per_day(parts))
        # The earliest the COUNT-th instance can be: after that many whole periods.
        if periods * interval * _PERIOD_DAYS[freq] > (until - first).days:
            parts = {k: v for k, v in parts.items() if k != "COUNT"}
    return parts


def _until(value: date | datetime, zone: tzinfo) -> datetime:
    """An UNTIL as an aware instant: a DATE includes its whole day in `zone`, floating is in `zone`."""
    if isinstance(value, datetime):
        return _aware(value, zone).astimezone(timezone.utc)
    return (datetime.combine(value + timedelta(days=1), time(), tzinfo=zone) - timedelta(seconds=1)).astimezone(timezone.utc)


def _whole_days(length: timedelta) -> int:
    """How many whole days an all-day event of `length` covers (at least one)."""
    return max(1, round(length.total_seconds() / 86400))


def _wall(value: datetime) -> datetime:
    """The wall-clock time of an aware datetime, for shifts that keep the time of day across DST."""
    return value.replace(tzinfo=None)


def _local(value: date | datetime, zone: tzinfo) -> datetime:
    """An aware date-time in `value`'s own zone (floating and DATE values in `zone`)."""
    if isinstance(value, datetime):
        return _aware(value, zone)
    return datetime.combine(value, time(), tzinfo=zone)


def _rule_text(parts: dict[str, list], zone: tzinfo, window_end: datetime) -> str:
    """An RRULE for dateutil with an aware DTSTART, ending at the window's end at the latest: its
    UNTIL in UTC (a DATE or floating UNTIL is read in `zone`), X- parts left out."""
    limit = window_end
    if parts.get("UNTIL"):
        limit = min(limit, _until(parts["UNTIL"][0], zone))
    out = [f"{key}=" + ",".join(_rule_value(v) for v in values)
           for key, values in parts.items() if key != "UNTIL" and not key.startswith("X-")]
    out.append("UNTIL=" + limit.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    return ";".join(out)


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
    if not isinstance(value, date):  # a datetime is a date too
        raise TypeError(f"not a date or date-time: {value!r}")
    return _local(value, zone).astimezone(timezone.utc), not isinstance(value, datetime)


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
