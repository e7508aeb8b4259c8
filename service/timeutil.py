"""Time at the edges: local wall-clock times in a meeting's zone, UTC inside."""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from service.errors import Invalid


def to_utc(value: datetime, zone: str, field: str) -> datetime:
    """An aware UTC datetime; a naive value is read in `zone`, and refused if it does not exist or is ambiguous there."""
    if value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    tz = ZoneInfo(zone)
    first = value.replace(tzinfo=tz, fold=0)
    second = value.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        # fold decides only in a gap or an overlap: in a gap the wall time does
        # not exist (it does not survive a round trip through UTC).
        back = first.astimezone(timezone.utc).astimezone(tz).replace(tzinfo=None)
        if back != value:
            raise Invalid(field, f"{value.isoformat()} does not exist in {zone} (the clocks skip it); give an offset")
        raise Invalid(field, f"{value.isoformat()} happens twice in {zone} (the clocks go back); give an offset")
    return first.astimezone(timezone.utc)


def local(value: datetime, zone: str) -> datetime:
    """`value` with the offset of `zone` at that instant."""
    return value.astimezone(ZoneInfo(zone))


def now() -> datetime:
    return datetime.now(timezone.utc)
