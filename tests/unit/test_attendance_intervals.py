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
    """Walk the minutes one by one: present while more joins than leaves have happened (never below zero;
    at the same minute joins count first)."""
    present = 0
    for minute in range(lo, min(hi, until)):
        depth = 0
        for t, kind in sorted(events, key=lambda e: (e[0], 1 if e[1] == "left" else 0)):
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


def test_a_join_and_a_leave_in_the_same_second_are_no_presence() -> None:
    # A device that connects and drops within one second of the provider's clock.
    marks = [Mark(at(5), "left", "jitsi"), Mark(at(5), "joined", "jitsi")]
    assert presence(marks, at(180), True) == []


def test_a_link_tried_long_before_the_meeting_is_no_presence_and_one_opened_in_time_is() -> None:
    earliest = at(-30)  # the meeting starts at minute 0; its video opens half an hour before
    tried = [Mark(at(-3 * 24 * 60), "link_opened", "link")]
    assert presence(tried, at(120), False, earliest) == []
    [span] = presence([*tried, Mark(at(-10), "link_opened", "link")], at(120), False, earliest)
    assert (span.start, span.end, span.estimated) == (at(-10), at(120), True)


def test_a_manual_leave_ends_the_presence_a_link_open_began() -> None:
    marks = [Mark(at(0), "link_opened", "link"), Mark(at(20), "link_opened", "link"), Mark(at(60), "left", "manual")]
    [span] = presence(marks, at(120), False, at(-30))
    assert (span.start, span.end, span.estimated) == (at(0), at(60), False)
    # Where the provider reports presence, link opens add nothing and the leave has no join to end.
    assert presence(marks, at(120), True, at(-30)) == []


def test_a_join_whose_leave_was_lost_before_the_meeting_gives_way_to_a_later_join() -> None:
    earliest = at(-30)
    lost = [Mark(at(-24 * 60), "joined", "jitsi")]
    assert presence(lost, at(120), True, earliest) == []
    marks = [*lost, Mark(at(10), "joined", "jitsi"), Mark(at(50), "left", "jitsi")]
    [span] = presence(marks, at(120), True, earliest)
    assert (span.start, span.end, span.estimated) == (at(10), at(50), False)


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


def test_a_join_and_a_leave_recorded_by_hand_after_a_link_open_end_the_presence() -> None:
    marks = [Mark(at(0), "link_opened", "link"), Mark(at(5), "joined", "manual"), Mark(at(30), "left", "manual")]
    [span] = presence(marks, at(120), False, at(-30))
    assert (span.start, span.end, span.estimated) == (at(0), at(30), False)
