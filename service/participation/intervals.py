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


def presence(marks: Iterable[Mark], until: datetime, provider_reports: bool) -> list[Interval]:
    """Merged presence intervals of one participant, cut at `until` (the meeting's end, or now).

    With a provider that reports presence, joined/left events make the intervals:
    events are put in time order first, so their arrival order does not matter;
    a join while already present (a second device) and a leave while absent
    change nothing. Without one, each link open counts as present from then to
    `until`, marked estimated. Manual events always count as joins and leaves.
    """
    ordered = sorted(marks, key=lambda m: (m.at, 0 if m.kind == "left" else 1))
    spans: list[Interval] = []
    if provider_reports or any(m.kind in ("joined", "left") for m in ordered):
        depth, start, source = 0, None, ""
        for mark in ordered:
            if mark.kind == "joined":
                if depth == 0:
                    start, source = mark.at, mark.source
                depth += 1
            elif mark.kind == "left" and depth > 0:
                depth -= 1
                if depth == 0 and start is not None:
                    spans.append(Interval(start, min(mark.at, until), source))
        if depth > 0 and start is not None:
            spans.append(Interval(start, until, source, estimated=True))
    else:
        spans = [Interval(m.at, until, m.source, estimated=True) for m in ordered if m.kind == "link_opened"]
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
