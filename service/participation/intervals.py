"""Who was there when: presence intervals from join and leave events, and their overlap with sessions."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable


@dataclass(frozen=True)
class Mark:
    """One attendance event as the arithmetic needs it."""

    at: datetime
    kind: str  # link_opened, joined or left
    source: str


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime
    source: str
    # True when the end was not reported (a link open, or a join with no leave).
    estimated: bool = False


def presence(marks: Iterable[Mark], until: datetime, provider_reports: bool,
             earliest: datetime | None = None) -> list[Interval]:
    """Merged presence intervals of one participant, cut at `until` (the meeting's end, or now).

    Events are put in time order first, so their arrival order does not matter; at the same
    instant a join comes before a leave (a device that connects and drops within one second of a
    provider's clock was there for no time, not for the rest of the meeting). A join while already
    present (a second device) and a leave while absent change nothing. Manual events always count
    as joins and leaves. With a provider that reports presence, its joins and leaves make the
    intervals and link opens say nothing more. Without one, a link open counts as a join whose
    leave is not known, so a manual leave ends it; opening the link again while present changes
    nothing.

    `earliest` (the meeting's start, less how early its video opens): presence whose end was never
    reported counts only from a mark at or after it. A link tried days before, on the meeting's
    first date before it was moved, or a join whose leave was lost on another day, says nothing
    about the meeting; a later join starts afresh.
    """
    ordered = sorted(marks, key=lambda m: (m.at, 1 if m.kind == "left" else 0))
    spans: list[Interval] = []
    # Present while joins outnumber leaves (`depth`) or a link open has not been ended by a leave.
    depth, linked, start, source = 0, False, None, ""
    for mark in ordered:
        if mark.kind == "link_opened" and (provider_reports or earliest is not None and mark.at < earliest):
            continue
        if mark.kind in ("joined", "link_opened"):
            present = depth > 0 or linked
            if present and earliest is not None and start is not None and start < earliest <= mark.at:
                depth, linked, present = 0, False, False  # present since before the meeting, its leave never seen
            if not present:
                start, source = mark.at, mark.source
            if mark.kind == "joined":
                depth += 1
            else:
                linked = True
        elif mark.kind == "left" and (depth > 0 or linked):
            depth, linked = max(0, depth - 1), False
            if depth == 0 and start is not None:
                spans.append(Interval(start, min(mark.at, until), source))
    if (depth > 0 or linked) and start is not None and (earliest is None or start >= earliest):
        spans.append(Interval(start, until, source, estimated=True))
    return merge([s for s in spans if s.end > s.start])


def merge(spans: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for span in sorted(spans, key=lambda s: s.start):
        if out and span.start <= out[-1].end:
            last = out[-1]
            out[-1] = Interval(last.start, max(last.end, span.end), last.source, last.estimated or span.estimated)
        else:
            out.append(span)
    return out


@dataclass(frozen=True)
class Overlap:
    seconds: float
    first_join: datetime | None
    last_leave: datetime | None
    source: str | None
    estimated: bool


def overlap(spans: list[Interval], start: datetime, end: datetime) -> Overlap:
    """How much of [start, end) the intervals cover, and when the first one began and the last one ended."""
    total = timedelta()
    first = last = None
    source, estimated = None, False
    for span in spans:
        lo, hi = max(span.start, start), min(span.end, end)
        if hi <= lo:
            continue
        total += hi - lo
        first = span.start if first is None else min(first, span.start)
        last = span.end if last is None else max(last, span.end)
        source = source or span.source
        estimated = estimated or span.estimated
    return Overlap(total.total_seconds(), first, last, source, estimated)
