"""Presence intervals from join and leave events, checked against a minute-by-minute reference."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from service.participation.intervals import Mark, overlap, presence

T0 = datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def minutes_present_reference(events: list[tuple[int, str]], until: int, lo: int, hi: int) -> int:
    """Walk the minutes one by one: present while more joins than leaves have happened (never below zero)."""
    present = 0
    for minute in range(lo, min(hi, until)):
        depth = 0
        for t, kind in sorted(events, key=lambda e: (e[0], 0 if e[1] == "left" else 1)):
            if t > minute:
                break
            depth = depth + 1 if kind == "joined" else max(0, depth - 1)
        present += depth > 0
    return present


def test_one_join_and_leave_gives_the_overlap_with_each_session() -> None:
    spans = presence([Mark(at(10), "joined", "jitsi"), Mark(at(70), "left", "jitsi")], at(180), True)
    assert overlap(spans, at(0), at(30)).seconds == 20 * 60
    assert overlap(spans, at(30), at(90)).seconds == 40 * 60
    assert overlap(spans, at(90), at(120)).seconds == 0


def test_leaving_early_and_coming_back_counts_both_stretches() -> None:
    marks = [Mark(at(0), "joined", "jitsi"), Mark(at(20), "left", "jitsi"), Mark(at(50), "joined", "jitsi"),
             Mark(at(60), "left", "jitsi")]
    o = overlap(presence(marks, at(120), True), at(0), at(90))
    assert o.seconds == 30 * 60 and o.first_join == at(0) and o.last_leave == at(60) and not o.estimated


def test_events_arriving_out_of_order_give_the_same_intervals() -> None:
    marks = [Mark(at(0), "joined", "jitsi"), Mark(at(20), "left", "jitsi"), Mark(at(50), "joined", "jitsi"),
             Mark(at(60), "left", "jitsi")]
    shuffled = marks[:]
    random.Random(4).shuffle(shuffled)
    assert presence(shuffled, at(120), True) == presence(marks, at(120), True)


def test_a_join_without_a_leave_lasts_to_the_end_and_is_marked_estimated() -> None:
    [span] = presence([Mark(at(30), "joined", "jitsi")], at(120), True)
    assert (span.start, span.end, span.estimated) == (at(30), at(120), True)


def test_a_link_open_counts_only_where_the_provider_reports_no_presence() -> None:
    marks = [Mark(at(15), "link_opened", "link")]
    [span] = presence(marks, at(120), provider_reports=False)
    assert (span.start, span.end, span.source, span.estimated) == (at(15), at(120), "link", True)
    assert presence(marks, at(120), provider_reports=True) == []


def test_two_devices_overlapping_count_once() -> None:
    marks = [Mark(at(0), "joined", "jitsi"), Mark(at(10), "joined", "jitsi"), Mark(at(20), "left", "jitsi"),
             Mark(at(40), "left", "jitsi")]
    assert overlap(presence(marks, at(120), True), at(0), at(120)).seconds == 40 * 60


events_strategy = st.lists(st.tuples(st.integers(0, 150), st.sampled_from(["joined", "left"])), max_size=12)


@settings(max_examples=300, deadline=None)
@given(events=events_strategy, until=st.integers(60, 180), lo=st.integers(0, 100), length=st.integers(1, 80))
def test_minutes_equal_a_straightforward_reference_for_any_event_order(events, until, lo, length) -> None:
    marks = [Mark(at(t), kind, "jitsi") for t, kind in events]
    random.Random(len(events)).shuffle(marks)
    got = overlap(presence(marks, at(until), True), at(lo), at(lo + length)).seconds / 60
    assert got == minutes_present_reference(events, until, lo, lo + length)
