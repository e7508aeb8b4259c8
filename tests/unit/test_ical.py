"""iCalendar rendering and parsing: what calendar clients get, and what we read back."""
from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from service.calendar.ical import (
    PRODID,
    Event,
    EventAttendee,
    EventRoom,
    EventSession,
    clean_text,
    parse_event,
    render_feed,
    render_personal,
    render_shared,
    room_address,
)

UTC = timezone.utc
STHLM = ZoneInfo("Europe/Stockholm")
STOCKHOLM = ZoneInfo("Europe/Stockholm")
TOKEN = "tok3n-Xy9_secret"
JOIN_URL = f"https://forum.test/j/{TOKEN}"
GENERAL_URL = "https://meet.example.org/forum-2027-04-05"
SIP_URI = "sip:forum-2027-04-05@video.example.org"


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM)


def make_event(**changes: object) -> Event:
    event = Event(
        uid="6f1c0d2e-meeting@forumbridge",
        sequence=3,
        status="CONFIRMED",
        title="Forum för regional utveckling",
        description="Dagordning:\n1. Kompetensförsörjning\n2. Övrigt",
        starts_at=local(2027, 4, 5, 9, 0).astimezone(UTC),
        ends_at=local(2027, 4, 5, 15, 0).astimezone(UTC),
        timezone="Europe/Stockholm",
        rooms=(
            EventRoom("Tillväxten", "Stockholmskontoret", "Stockholm"),
            EventRoom("Storsjön", "Östersundskontoret", "Östersund"),
        ),
        sessions=(
            EventSession("Kompetensförsörjning", local(2027, 4, 5, 9, 30), local(2027, 4, 5, 11, 0)),
            EventSession("Infrastruktur", local(2027, 4, 5, 13, 0), local(2027, 4, 5, 14, 30), topic="Järnväg"),
        ),
        attendees=(
            EventAttendee("Anna Öberg", "anna.oberg@region.example", "ACCEPTED"),
            EventAttendee("Bo Ek", "Bo.Ek@Kommun.example", "TENTATIVE", role="OPT-PARTICIPANT", remote=True),
            EventAttendee("Cecilia Lind", "cecilia@myndighet.example", "NEEDS-ACTION", remote=True),
        ),
        organizer_name="Forumsekretariatet",
        organizer_email="forum@myndighet.example",
        url="https://forum.test/meetings/6f1c0d2e",
        conference_url=GENERAL_URL,
        sip_uri=SIP_URI,
        dtstamp=datetime(2027, 3, 20, 8, 15, 0, tzinfo=UTC),
        created=datetime(2027, 3, 1, 10, 0, 0, tzinfo=UTC),
        last_modified=datetime(2027, 3, 20, 8, 15, 0, tzinfo=UTC),
    )
    return dataclasses.replace(event, **changes)


def the_calendar(data: bytes) -> Calendar:
    return Calendar.from_ical(data)


def the_vevent(data: bytes):
    (vevent,) = the_calendar(data).walk("VEVENT")
    return vevent


def unfolded_lines(data: bytes) -> list[str]:
    return re.sub(rb"\r\n[ \t]", b"", data).decode("utf-8").split("\r\n")


def assert_well_formed(data: bytes) -> None:
    data.decode("utf-8")
    assert data.endswith(b"\r\n")
    for line in data.split(b"\r\n")[:-1]:
        assert len(line) <= 75, line
        line.decode("utf-8")  # a fold never splits a character
        assert b"\r" not in line and b"\n" not in line


def attendees_by_email(vevent) -> dict[str, object]:
    return {address.email.lower(): address for address in vevent.attendees}


# -- the shared copy ----------------------------------------------------------------


def test_shared_copy_carries_every_property_a_calendar_reader_needs() -> None:
    data = render_shared(make_event())
    assert_well_formed(data)
    calendar = the_calendar(data)
    assert str(calendar["PRODID"]) == PRODID
    assert str(calendar["VERSION"]) == "2.0"
    assert str(calendar["CALSCALE"]) == "GREGORIAN"
    assert "METHOD" not in calendar
    assert [tz.tz_name for tz in calendar.timezones] == ["Europe/Stockholm"]

    vevent = the_vevent(data)
    assert str(vevent["UID"]) == "6f1c0d2e-meeting@forumbridge"
    assert vevent["SEQUENCE"] == 3
    assert vevent["DTSTAMP"].dt == datetime(2027, 3, 20, 8, 15, tzinfo=UTC)
    assert vevent["CREATED"].dt == datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
    assert vevent["LAST-MODIFIED"].dt == datetime(2027, 3, 20, 8, 15, tzinfo=UTC)
    assert vevent["DTSTART"].params["TZID"] == "Europe/Stockholm"
    assert vevent["DTEND"].params["TZID"] == "Europe/Stockholm"
    assert vevent["DTSTART"].dt == local(2027, 4, 5, 9, 0)
    assert vevent["DTEND"].dt == local(2027, 4, 5, 15, 0)
    assert "DTSTART;TZID=Europe/Stockholm:20270405T090000" in unfolded_lines(data)
    assert str(vevent["SUMMARY"]) == "Forum för regional utveckling"
    assert str(vevent["LOCATION"]) == "Tillväxten, Stockholm; Storsjön, Östersund"
    assert str(vevent["URL"]) == "https://forum.test/meetings/6f1c0d2e"
    assert str(vevent["STATUS"]) == "CONFIRMED"
    assert str(vevent["TRANSP"]) == "OPAQUE"
    assert str(vevent["X-FORUMBRIDGE"]) == "TRUE"

    assert str(vevent["DESCRIPTION"]).split("\n") == [
        GENERAL_URL,
        "Deltar du på distans: använd den personliga länken i din inbjudan.",
        "",
        "09:30–11:00 Kompetensförsörjning",
        "13:00–14:30 Infrastruktur (Järnväg)",
        "",
        "Dagordning:",
        "1. Kompetensförsörjning",
        "2. Övrigt",
    ]

    conferences = {str(c.uri): c for c in vevent.conferences}
    assert set(conferences) == {GENERAL_URL, SIP_URI}
    for conference in conferences.values():
        assert conference.feature == ["AUDIO", "VIDEO"]
    assert conferences[GENERAL_URL].label == "Videomöte"
    assert conferences[SIP_URI].label == "Rumssystem (SIP)"
    assert "CONFERENCE;FEATURE=AUDIO,VIDEO;LABEL=Videomöte;VALUE=URI:" + GENERAL_URL in unfolded_lines(data)

    organizer = vevent["ORGANIZER"]
    assert organizer.email == "forum@myndighet.example"
    assert organizer.params["CN"] == "Forumsekretariatet"


def test_shared_copy_lists_each_person_and_each_room_as_an_attendee() -> None:
    event = make_event()
    vevent = the_vevent(render_shared(event))
    attendees = attendees_by_email(vevent)
    assert len(vevent.attendees) == 5

    bo = attendees["bo.ek@kommun.example"]
    assert bo.params["CN"] == "Bo Ek"
    assert bo.params["PARTSTAT"] == "TENTATIVE"
    assert bo.params["ROLE"] == "OPT-PARTICIPANT"
    assert bo.params["CUTYPE"] == "INDIVIDUAL"
    assert bo.params["RSVP"] == "TRUE"
    assert attendees["anna.oberg@region.example"].params["PARTSTAT"] == "ACCEPTED"
    assert attendees["anna.oberg@region.example"].params["ROLE"] == "REQ-PARTICIPANT"

    for room in event.rooms:
        address = attendees[room_address(room, event.organizer_email)]
        assert address.params["CN"] == room.name
        assert address.params["CUTYPE"] == "ROOM"
        assert address.params["ROLE"] == "NON-PARTICIPANT"
        assert address.params["PARTSTAT"] == "ACCEPTED"
        assert "RSVP" not in address.params


def test_shared_copy_never_holds_a_personal_join_link() -> None:
    data = render_shared(make_event(description=f"Se {GENERAL_URL}"))
    assert b"/j/" not in data
    assert TOKEN.encode() not in data


def test_shared_copy_leaves_out_what_the_meeting_does_not_have() -> None:
    event = make_event(
        description=None, url=None, conference_url=None, sip_uri=None, created=None,
        last_modified=None, sessions=(), rooms=(),
        attendees=(EventAttendee("Anna Öberg", "anna@region.example", "ACCEPTED"),),
    )
    vevent = the_vevent(render_shared(event))
    for name in ("DESCRIPTION", "URL", "CONFERENCE", "CREATED", "LAST-MODIFIED", "LOCATION"):
        assert name not in vevent, name


def test_shared_copy_of_a_cancelled_meeting_says_so() -> None:
    vevent = the_vevent(render_shared(make_event(status="CANCELLED", sequence=4)))
    assert str(vevent["STATUS"]) == "CANCELLED"
    assert vevent["SEQUENCE"] == 4


def test_sessions_of_a_meeting_over_several_days_carry_their_date() -> None:
    event = make_event(
        ends_at=local(2027, 4, 6, 12, 0).astimezone(UTC),
        sessions=(EventSession("Dag två", local(2027, 4, 6, 9, 0), local(2027, 4, 6, 10, 0)),),
    )
    description = str(the_vevent(render_shared(event))["DESCRIPTION"])
    assert "2027-04-06 09:00–10:00 Dag två" in description.split("\n")


# -- time zones ----------------------------------------------------------------------


def test_a_meeting_over_the_spring_dst_change_keeps_its_local_times_and_length() -> None:
    event = make_event(
        starts_at=local(2027, 3, 28, 0, 30).astimezone(UTC),
        ends_at=local(2027, 3, 28, 5, 0).astimezone(UTC),
        sessions=(),
    )
    assert event.ends_at - event.starts_at == timedelta(hours=3, minutes=30)
    data = render_shared(event)
    lines = unfolded_lines(data)
    assert "DTSTART;TZID=Europe/Stockholm:20270328T003000" in lines
    assert "DTEND;TZID=Europe/Stockholm:20270328T050000" in lines

    vevent = the_vevent(data)
    # Python subtracts two datetimes of one zone by wall clock: compare in UTC.
    assert vevent["DTEND"].dt.astimezone(UTC) - vevent["DTSTART"].dt.astimezone(UTC) == timedelta(hours=3, minutes=30)
    parsed = parse_event(data)
    assert parsed is not None
    assert parsed.ends_at - parsed.starts_at == timedelta(hours=3, minutes=30)
    assert vevent["DTSTART"].dt.astimezone(UTC) == datetime(2027, 3, 27, 23, 30, tzinfo=UTC)
    assert vevent["DTEND"].dt.astimezone(UTC) == datetime(2027, 3, 28, 3, 0, tzinfo=UTC)


def test_the_vtimezone_has_standard_and_daylight_observances_covering_the_meeting() -> None:
    event = make_event(
        starts_at=local(2027, 3, 28, 0, 30).astimezone(UTC),
        ends_at=local(2027, 3, 28, 5, 0).astimezone(UTC),
        sessions=(),
    )
    (vtimezone,) = the_calendar(render_shared(event)).timezones
    assert vtimezone.tz_name == "Europe/Stockholm"
    daylight = vtimezone.walk("DAYLIGHT")
    standard = vtimezone.walk("STANDARD")
    assert daylight and standard
    for observance in daylight:
        assert observance["TZOFFSETFROM"].td == timedelta(hours=1)
        assert observance["TZOFFSETTO"].td == timedelta(hours=2)
        assert observance["TZNAME"] == "CEST"
    assert {(o["TZOFFSETFROM"].td, o["TZOFFSETTO"].td) for o in standard} >= {
        (timedelta(hours=2), timedelta(hours=1))
    }
    # The spring change of 2027 is one of the DAYLIGHT onsets (DTSTART or RDATE).
    assert any(b"20270328T" in observance.to_ical() for observance in daylight)

    # Read by its own rules, not by the zone database, the VTIMEZONE agrees.
    own_rules = vtimezone.to_tz(lookup_tzid=False)
    assert datetime(2027, 3, 28, 0, 30, tzinfo=own_rules).utcoffset() == timedelta(hours=1)
    assert datetime(2027, 3, 28, 5, 0, tzinfo=own_rules).utcoffset() == timedelta(hours=2)
    assert datetime(2027, 4, 5, 9, 0, tzinfo=own_rules).utcoffset() == timedelta(hours=2)
    assert datetime(2027, 11, 5, 9, 0, tzinfo=own_rules).utcoffset() == timedelta(hours=1)


def test_a_meeting_in_utc_needs_no_vtimezone() -> None:
    data = render_shared(make_event(timezone="UTC", sessions=()))
    assert the_calendar(data).timezones == []
    assert the_vevent(data)["DTSTART"].dt == local(2027, 4, 5, 9, 0)


# -- text safety ----------------------------------------------------------------------

TEXT_CASES = [
    # (given, as TEXT after normalisation, as a one-line parameter such as CN)
    pytest.param("Möte om åäö ÅÄÖ", "Möte om åäö ÅÄÖ", "Möte om åäö ÅÄÖ", id="swedish"),
    pytest.param("Planering 🚀🇸🇪", "Planering 🚀🇸🇪", "Planering 🚀🇸🇪", id="emoji"),
    pytest.param("a, b; c: d", "a, b; c: d", "a, b; c: d", id="comma-semicolon-colon"),
    pytest.param('Säg "hej"', 'Säg "hej"', 'Säg "hej"', id="double-quotes"),
    pytest.param("C:\\mapp\\fil", "C:\\mapp\\fil", "C:/mapp/fil", id="backslash"),
    pytest.param("slut\\", "slut\\", "slut/", id="trailing-backslash"),
    pytest.param("\\n is not a newline", "\\n is not a newline", "/n is not a newline", id="escaped-looking"),
    pytest.param("rad 1\nrad 2", "rad 1\nrad 2", "rad 1 rad 2", id="newline"),
    pytest.param("rad 1\r\nrad 2", "rad 1\nrad 2", "rad 1 rad 2", id="crlf"),
    pytest.param("rad 1\rrad 2", "rad 1\nrad 2", "rad 1 rad 2", id="lone-cr"),
    pytest.param("tab\there", "tab\there", "tab here", id="tab"),
    pytest.param("nul\x00bell\x07esc\x1bdel\x7fend", "nulbellescdelend", "nulbellescdelend", id="controls"),
    pytest.param("\ufeffbom", "bom", "bom", id="bom"),
    pytest.param("lone\ud800surrogate", "lonesurrogate", "lonesurrogate", id="lone-surrogate"),
    pytest.param(
        "x\r\nATTENDEE:mailto:evil@x", "x\nATTENDEE:mailto:evil@x", "x ATTENDEE:mailto:evil@x", id="attendee-injection"
    ),
    pytest.param(
        "x\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:evil",
        "x\nEND:VEVENT\nBEGIN:VEVENT\nUID:evil",
        "x END:VEVENT BEGIN:VEVENT UID:evil",
        id="component-injection",
    ),
    pytest.param("ö" * 120, "ö" * 120, "ö" * 120, id="long-two-byte"),
    pytest.param("a" + "😀" * 80, "a" + "😀" * 80, "a" + "😀" * 80, id="long-four-byte-misaligned"),
    pytest.param("åäö" + "\\," * 60, "åäö" + "\\," * 60, "åäö" + "/," * 60, id="long-escapes"),
]


def assert_no_injected_lines(data: bytes, expected_attendees: int) -> None:
    lines = unfolded_lines(data)
    assert sum(line.startswith("ATTENDEE") for line in lines) == expected_attendees
    assert not any(line.startswith(("ATTENDEE:mailto:evil", "UID:evil")) for line in lines)
    assert lines.count("BEGIN:VEVENT") == 1


@pytest.mark.parametrize(("given", "text", "param"), TEXT_CASES)
def test_user_text_is_escaped_folded_and_read_back_normalised(given: str, text: str, param: str) -> None:
    event = make_event(
        title=given,
        description=given,
        organizer_name=given,
        conference_url=None,
        sip_uri=None,
        sessions=(),
        rooms=(EventRoom(given, "Kontoret", "Stockholm"),),
        attendees=(EventAttendee(given, "anna@region.example", "ACCEPTED"),),
    )
    data = render_shared(event)
    assert_well_formed(data)
    assert_no_injected_lines(data, expected_attendees=2)

    vevent = the_vevent(data)
    assert str(vevent["SUMMARY"]) == text
    assert str(vevent["DESCRIPTION"]) == text
    assert str(vevent["LOCATION"]) == f"{param}, Stockholm"
    assert vevent["ORGANIZER"].params["CN"] == param
    assert {address.params["CN"] for address in vevent.attendees} == {param}

    parsed = parse_event(data)
    assert parsed is not None
    assert parsed.summary == text
    assert parsed.description == text


@pytest.mark.parametrize(("given", "text", "param"), TEXT_CASES)
def test_user_text_in_a_personal_copy_and_a_feed_is_as_safe(given: str, text: str, param: str) -> None:
    event = make_event(
        title=given,
        sessions=(EventSession(given, local(2027, 4, 5, 9, 30), local(2027, 4, 5, 10, 0), topic=given),),
    )
    personal = render_personal(event, "bo.ek@kommun.example", JOIN_URL, method="REQUEST")
    feed = render_feed([event], given)
    for data in (personal, feed):
        assert_well_formed(data)
        assert_no_injected_lines(data, expected_attendees=5)
        assert str(the_vevent(data)["SUMMARY"]) == text
    assert f"09:30–10:00 {param} ({param})" in str(the_vevent(personal)["DESCRIPTION"]).split("\n")
    assert str(the_calendar(feed)["X-WR-CALNAME"]) == param


@pytest.mark.parametrize(
    "email",
    ["anna@region.example\r\nATTENDEE:mailto:evil@x", "anna@region.example\nATTENDEE:mailto:evil@x", "anna@\x00region.example"],
)
def test_an_address_with_line_breaks_cannot_add_a_property(email: str) -> None:
    event = make_event(attendees=(EventAttendee("Anna", email, "ACCEPTED"),), organizer_email=email)
    data = render_shared(event)
    assert_well_formed(data)
    assert_no_injected_lines(data, expected_attendees=3)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_survives_a_round_trip_after_normalisation(value: str) -> None:
    event = make_event(
        title=value, description=value, conference_url=None, sip_uri=None, sessions=(),
        attendees=(EventAttendee("Anna", "anna@region.example", "ACCEPTED"),),
    )
    data = render_shared(event)
    assert_well_formed(data)
    parsed = parse_event(data)
    assert parsed is not None
    assert parsed.summary == clean_text(value)
    assert parsed.description == (clean_text(value) or None)


# -- the personal copy ----------------------------------------------------------------


def test_a_remote_participants_copy_puts_the_join_link_everywhere_clients_look() -> None:
    data = render_personal(make_event(), "bo.ek@kommun.example", JOIN_URL)
    assert_well_formed(data)
    assert "METHOD" not in the_calendar(data)
    vevent = the_vevent(data)
    assert str(vevent["LOCATION"]) == JOIN_URL
    description = str(vevent["DESCRIPTION"]).split("\n")
    assert description[0] == JOIN_URL
    assert "09:30–11:00 Kompetensförsörjning" in description
    assert str(vevent["URL"]) == JOIN_URL
    conferences = {str(c.uri): c for c in vevent.conferences}
    assert JOIN_URL in conferences
    assert conferences[JOIN_URL].feature == ["AUDIO", "VIDEO"]
    assert conferences[JOIN_URL].label == "Din personliga länk"
    assert SIP_URI in conferences
    # The general link would bypass the attendance the personal link records.
    assert GENERAL_URL not in data.decode()


def test_an_in_room_participants_copy_keeps_the_room_as_location() -> None:
    vevent = the_vevent(render_personal(make_event(), "ANNA.OBERG@region.example", JOIN_URL))
    assert str(vevent["LOCATION"]) == "Tillväxten, Stockholm; Storsjön, Östersund"
    assert str(vevent["DESCRIPTION"]).split("\n")[0] == JOIN_URL
    assert str(vevent["URL"]) == JOIN_URL
    assert JOIN_URL in {str(c.uri) for c in vevent.conferences}


def test_a_personal_copy_without_a_link_is_the_meeting_with_its_page() -> None:
    vevent = the_vevent(render_personal(make_event(), "anna.oberg@region.example", None))
    assert str(vevent["LOCATION"]) == "Tillväxten, Stockholm; Storsjön, Östersund"
    assert str(vevent["URL"]) == "https://forum.test/meetings/6f1c0d2e"
    assert str(vevent["DESCRIPTION"]).startswith("09:30–11:00")


def test_an_invitation_request_is_an_imip_request_with_every_attendee() -> None:
    data = render_personal(make_event(), "bo.ek@kommun.example", JOIN_URL, method="REQUEST")
    assert str(the_calendar(data)["METHOD"]) == "REQUEST"
    vevent = the_vevent(data)
    assert str(vevent["STATUS"]) == "CONFIRMED"
    assert vevent["SEQUENCE"] == 3
    assert len(vevent.attendees) == 5
    assert str(vevent["ORGANIZER"]) == "mailto:forum@myndighet.example"


def test_a_cancellation_sets_method_and_status_and_names_the_attendee() -> None:
    data = render_personal(make_event(sequence=4), "bo.ek@kommun.example", JOIN_URL, method="CANCEL")
    assert_well_formed(data)
    assert str(the_calendar(data)["METHOD"]) == "CANCEL"
    vevent = the_vevent(data)
    assert str(vevent["STATUS"]) == "CANCELLED"
    assert vevent["SEQUENCE"] == 4
    assert str(vevent["UID"]) == "6f1c0d2e-meeting@forumbridge"
    assert [address.email for address in vevent.attendees] == ["Bo.Ek@Kommun.example"]
    assert "ORGANIZER" in vevent


@pytest.mark.parametrize(
    ("email", "method"),
    [("nobody@example.org", None), ("bo.ek@kommun.example", "PUBLISH"), ("bo.ek@kommun.example", "request")],
)
def test_a_personal_copy_for_a_stranger_or_with_an_unknown_method_is_refused(email: str, method: str | None) -> None:
    with pytest.raises(ValueError):
        render_personal(make_event(), email, JOIN_URL, method=method)


# -- feeds ------------------------------------------------------------------------------


def test_a_feed_holds_every_event_and_one_vtimezone_per_zone() -> None:
    events = [
        make_event(uid="a@forumbridge"),
        make_event(uid="b@forumbridge", starts_at=local(2029, 1, 10, 9, 0).astimezone(UTC),
                   ends_at=local(2029, 1, 10, 10, 0).astimezone(UTC), sessions=()),
        make_event(uid="c@forumbridge", timezone="America/New_York", sessions=()),
        make_event(uid="d@forumbridge", timezone="UTC", sessions=()),
    ]
    data = render_feed(events, "Forum för regional utveckling")
    assert_well_formed(data)
    calendar = the_calendar(data)
    assert str(calendar["X-WR-CALNAME"]) == "Forum för regional utveckling"
    assert "METHOD" not in calendar
    assert sorted(tz.tz_name for tz in calendar.timezones) == ["America/New_York", "Europe/Stockholm"]
    assert [str(v["UID"]) for v in calendar.walk("VEVENT")] == [e.uid for e in events]
    assert b"/j/" not in data

    # The Stockholm zone covers both 2027 and 2029.
    stockholm = next(tz for tz in calendar.timezones if tz.tz_name == "Europe/Stockholm").to_tz(lookup_tzid=False)
    assert datetime(2027, 7, 1, 12, tzinfo=stockholm).utcoffset() == timedelta(hours=2)
    assert datetime(2029, 7, 1, 12, tzinfo=stockholm).utcoffset() == timedelta(hours=2)
    assert datetime(2029, 1, 10, 9, tzinfo=stockholm).utcoffset() == timedelta(hours=1)


def test_an_empty_feed_is_still_a_calendar() -> None:
    calendar = the_calendar(render_feed([], "Tomt"))
    assert calendar.walk("VEVENT") == []
    assert str(calendar["X-WR-CALNAME"]) == "Tomt"


# -- room addresses ----------------------------------------------------------------------


def test_a_room_address_is_stable_ascii_in_the_organizers_domain() -> None:
    room = EventRoom("Tillväxten", "Stockholmskontoret", "Stockholm")
    assert room_address(room, "forum@myndighet.example") == "room-stockholmskontoret-tillvaxten@myndighet.example"
    assert room_address(room, "forum@myndighet.example") == room_address(
        EventRoom("Tillväxten", "Stockholmskontoret", "Stockholm"), "forum@myndighet.example"
    )


def test_a_room_with_its_own_address_keeps_it() -> None:
    room = EventRoom("Tillväxten", "Stockholmskontoret", "Stockholm", email="tillvaxten@rooms.example")
    assert room_address(room, "forum@myndighet.example") == "tillvaxten@rooms.example"


def test_a_room_named_without_latin_letters_still_gets_a_stable_address() -> None:
    address = room_address(EventRoom("🌲🌲", "🏢", "Östersund"), "forum@myndighet.example")
    assert re.fullmatch(r"room-[0-9a-f]{12}@myndighet\.example", address)
    assert address != room_address(EventRoom("🌲", "🏢", "Östersund"), "forum@myndighet.example")


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "TENTATIVE"},
        {"starts_at": datetime(2027, 4, 5, 9, 0)},
        {"dtstamp": datetime(2027, 4, 5, 9, 0)},
        {"timezone": "Europe/Nowhere"},
    ],
)
def test_an_event_with_bad_values_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_event(**changes)


def test_an_attendee_with_an_unknown_partstat_is_refused() -> None:
    with pytest.raises(ValueError):
        EventAttendee("Anna", "anna@region.example", "MAYBE")


# -- reading objects back ---------------------------------------------------------------------


def ics(text: str) -> bytes:
    return text.strip().replace("\n", "\r\n").encode("utf-8") + b"\r\n"


THUNDERBIRD = ics("""
BEGIN:VCALENDAR
PRODID:-//Mozilla.org/NONSGML Mozilla Calendar V1.1//EN
VERSION:2.0
BEGIN:VTIMEZONE
TZID:Europe/Stockholm
X-TZINFO:Europe/Stockholm[2024a]
BEGIN:STANDARD
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
TZNAME:CET
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
TZNAME:CEST
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
CREATED:20270301T101010Z
LAST-MODIFIED:20270301T101500Z
DTSTAMP:20270301T101500Z
UID:3c0e0b0e-1111-4a7e-9a3b-2b1d5c6e7f80
SUMMARY:Styrgrupp\\, vår
ORGANIZER;CN=Karin:mailto:karin@region.example
ATTENDEE;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT;CN=Karin:MAILTO:Karin@Region.example
ATTENDEE;PARTSTAT=TENTATIVE;ROLE=REQ-PARTICIPANT;CN=Olle:mailto:olle@example.org
ATTENDEE;ROLE=REQ-PARTICIPANT;CN=Pia:mailto:pia@example.org
DTSTART;TZID=Europe/Stockholm:20270405T130000
DTEND;TZID=Europe/Stockholm:20270405T143000
TRANSP:OPAQUE
SEQUENCE:3
X-MOZ-GENERATION:2
LOCATION:Tillväxten
DESCRIPTION:Rad ett\\nRad två
END:VEVENT
END:VCALENDAR
""")

OUTLOOK_WINDOWS_ZONE = ics("""
BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16011028T030000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010325T020000
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:040000008200E00074C5B7101A82E008
DTSTAMP:20270301T000000Z
DTSTART;TZID="W. Europe Standard Time":20270722T120000
DTEND;TZID="W. Europe Standard Time":20270722T130000
SUMMARY;LANGUAGE=sv:Lunchmöte
TRANSP:TRANSPARENT
STATUS:TENTATIVE
END:VEVENT
END:VCALENDAR
""")

ALL_DAY = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Apple Inc.//macOS 14.0//EN
BEGIN:VEVENT
UID:allday-1
DTSTAMP:20270301T000000Z
DTSTART;VALUE=DATE:20270405
DTEND;VALUE=DATE:20270407
SUMMARY:Konferens
TRANSP:TRANSPARENT
END:VEVENT
END:VCALENDAR
""")

ALL_DAY_WITHOUT_END = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//x//y//EN
BEGIN:VEVENT
UID:allday-2
DTSTAMP:20270301T000000Z
DTSTART;VALUE=DATE:20270328
SUMMARY:Heldag på DST-dagen
END:VEVENT
END:VCALENDAR
""")

IN_UTC = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Nextcloud calendar//EN
BEGIN:VEVENT
UID:utc-1
DTSTAMP:20270301T000000Z
DTSTART:20270405T070000Z
DTEND:20270405T080000Z
SUMMARY:I UTC
STATUS:CANCELLED
SEQUENCE:7
END:VEVENT
END:VCALENDAR
""")

FLOATING = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//x//y//EN
BEGIN:VEVENT
UID:floating-1
DTSTAMP:20270301T000000Z
DTSTART:20270405T090000
DTEND:20270405T100000
SUMMARY:Flytande tid
END:VEVENT
END:VCALENDAR
""")

WITH_DURATION = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//x//y//EN
BEGIN:VEVENT
UID:duration-1
DTSTAMP:20270301T000000Z
DTSTART;TZID=Europe/Stockholm:20270405T090000
DURATION:PT1H30M
SUMMARY:Med varaktighet
END:VEVENT
END:VCALENDAR
""")

WITH_DAY_DURATION_OVER_DST = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//x//y//EN
BEGIN:VEVENT
UID:duration-2
DTSTAMP:20270301T000000Z
DTSTART;TZID=Europe/Stockholm:20270327T090000
DURATION:P1DT2H
SUMMARY:Över sommartiden
END:VEVENT
END:VCALENDAR
""")

RECURRING = ics("""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//x//y//EN
BEGIN:VEVENT
UID:weekly-1
DTSTAMP:20270301T000000Z
RECURRENCE-ID;TZID=Europe/Stockholm:20270412T100000
DTSTART;TZID=Europe/Stockholm:20270412T140000
DTEND;TZID=Europe/Stockholm:20270412T150000
SUMMARY:Veckomöte (flyttat)
END:VEVENT
BEGIN:VEVENT
UID:weekly-1
DTSTAMP:20270301T000000Z
DTSTART;TZID=Europe/Stockholm:20270405T100000
DTEND;TZID=Europe/Stockholm:20270405T110000
RRULE:FREQ=WEEKLY;COUNT=10
SUMMARY:Veckomöte
END:VEVENT
END:VCALENDAR
""")


def test_a_thunderbird_event_with_a_tzid_is_read_in_its_zone() -> None:
    parsed = parse_event(THUNDERBIRD)
    assert parsed is not None
    assert parsed.uid == "3c0e0b0e-1111-4a7e-9a3b-2b1d5c6e7f80"
    assert parsed.sequence == 3
    assert parsed.status == "CONFIRMED"
    assert parsed.summary == "Styrgrupp, vår"
    assert parsed.description == "Rad ett\nRad två"
    assert parsed.location == "Tillväxten"
    assert parsed.starts_at == datetime(2027, 4, 5, 11, 0, tzinfo=UTC)
    assert parsed.ends_at == datetime(2027, 4, 5, 12, 30, tzinfo=UTC)
    assert parsed.starts_at.tzinfo is UTC
    assert parsed.all_day is False
    assert parsed.recurring is False
    assert parsed.transp == "OPAQUE"
    assert parsed.ours is False
    assert parsed.organizer_email == "karin@region.example"
    assert parsed.attendees == {
        "karin@region.example": "ACCEPTED",
        "olle@example.org": "TENTATIVE",
        "pia@example.org": "NEEDS-ACTION",
    }


def test_an_outlook_event_in_a_windows_zone_is_read_by_its_vtimezone() -> None:
    parsed = parse_event(OUTLOOK_WINDOWS_ZONE)
    assert parsed is not None
    assert parsed.starts_at == datetime(2027, 7, 22, 10, 0, tzinfo=UTC)
    assert parsed.ends_at == datetime(2027, 7, 22, 11, 0, tzinfo=UTC)
    assert parsed.transp == "TRANSPARENT"
    assert parsed.status == "TENTATIVE"
    assert parsed.sequence == 0
    assert parsed.attendees == {}


@pytest.mark.parametrize(
    ("data", "zone", "starts_at", "ends_at", "all_day"),
    [
        pytest.param(ALL_DAY, "Europe/Stockholm", datetime(2027, 4, 4, 22, tzinfo=UTC),
                     datetime(2027, 4, 6, 22, tzinfo=UTC), True, id="all-day-two-days"),
        pytest.param(ALL_DAY, "UTC", datetime(2027, 4, 5, tzinfo=UTC),
                     datetime(2027, 4, 7, tzinfo=UTC), True, id="all-day-read-in-utc"),
        pytest.param(ALL_DAY_WITHOUT_END, "Europe/Stockholm", datetime(2027, 3, 27, 23, tzinfo=UTC),
                     datetime(2027, 3, 28, 22, tzinfo=UTC), True, id="all-day-without-end-on-dst-day"),
        pytest.param(IN_UTC, "Europe/Stockholm", datetime(2027, 4, 5, 7, tzinfo=UTC),
                     datetime(2027, 4, 5, 8, tzinfo=UTC), False, id="utc"),
        pytest.param(FLOATING, "Europe/Stockholm", datetime(2027, 4, 5, 7, tzinfo=UTC),
                     datetime(2027, 4, 5, 8, tzinfo=UTC), False, id="floating"),
        pytest.param(FLOATING, "America/New_York", datetime(2027, 4, 5, 13, tzinfo=UTC),
                     datetime(2027, 4, 5, 14, tzinfo=UTC), False, id="floating-elsewhere"),
        pytest.param(WITH_DURATION, "Europe/Stockholm", datetime(2027, 4, 5, 7, tzinfo=UTC),
                     datetime(2027, 4, 5, 8, 30, tzinfo=UTC), False, id="duration"),
        pytest.param(WITH_DAY_DURATION_OVER_DST, "Europe/Stockholm", datetime(2027, 3, 27, 8, tzinfo=UTC),
                     datetime(2027, 3, 28, 9, tzinfo=UTC), False, id="nominal-day-over-dst"),
    ],
)
def test_foreign_times_are_read_as_aware_utc(
    data: bytes, zone: str, starts_at: datetime, ends_at: datetime, all_day: bool
) -> None:
    parsed = parse_event(data, default_zone=zone)
    assert parsed is not None
    assert (parsed.starts_at, parsed.ends_at, parsed.all_day) == (starts_at, ends_at, all_day)
    assert parsed.starts_at.utcoffset() == timedelta(0)


def test_an_end_before_the_start_reads_as_a_zero_length_event() -> None:
    parsed = parse_event(IN_UTC.replace(b"DTEND:20270405T080000Z", b"DTEND:20270405T060000Z"))
    assert parsed is not None
    assert parsed.ends_at == parsed.starts_at == datetime(2027, 4, 5, 7, tzinfo=UTC)


def test_a_utc_event_keeps_its_status_and_sequence() -> None:
    parsed = parse_event(IN_UTC)
    assert parsed is not None
    assert (parsed.status, parsed.sequence) == ("CANCELLED", 7)


def test_a_recurring_event_is_read_from_its_master_and_marked() -> None:
    parsed = parse_event(RECURRING)
    assert parsed is not None
    assert parsed.uid == "weekly-1"
    assert parsed.summary == "Veckomöte"
    assert parsed.starts_at == datetime(2027, 4, 5, 8, 0, tzinfo=UTC)
    assert parsed.recurring is True


def test_our_own_objects_are_recognised_by_marker_or_uid() -> None:
    rendered = parse_event(render_shared(make_event(uid="plain-uuid-without-suffix")))
    assert rendered is not None and rendered.ours is True
    stripped = IN_UTC.replace(b"UID:utc-1", b"UID:abc@forumbridge")
    assert parse_event(stripped).ours is True
    assert parse_event(IN_UTC).ours is False


def test_a_bare_vevent_is_read_too() -> None:
    bare = ics("""
BEGIN:VEVENT
UID:bare
DTSTART:20270405T070000Z
DTEND:20270405T080000Z
END:VEVENT
""")
    parsed = parse_event(bare)
    assert parsed is not None
    assert parsed.summary is None
    assert parsed.ends_at - parsed.starts_at == timedelta(hours=1)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"\xff\xfe\x00\x01", id="binary"),
        pytest.param(b"<html><body>502 Bad Gateway</body></html>", id="html"),
        pytest.param(ics("BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR"), id="no-vevent"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VTODO\nUID:t\nDTSTART:20270405T070000Z\nEND:VTODO\nEND:VCALENDAR"), id="todo"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nEND:VEVENT\nEND:VCALENDAR"), id="no-dtstart"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20270405T070000Z\nEND:VEVENT\nEND:VCALENDAR"), id="no-uid"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:tomorrow\nEND:VEVENT\nEND:VCALENDAR"), id="bad-dtstart"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:20270405T070000Z\nDTEND:soon\nEND:VEVENT\nEND:VCALENDAR"), id="bad-dtend"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:20270405T070000Z\nDURATION:long\nEND:VEVENT\nEND:VCALENDAR"), id="bad-duration"),
        pytest.param(ics("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:x\nDTSTART:20270405T070000Z"), id="truncated"),
        pytest.param(ics("BEGIN:VCALENDAR\nEND:VCALENDAR\nBEGIN:VCALENDAR\nEND:VCALENDAR"), id="two-calendars"),
    ],
)
def test_garbage_is_none_not_an_exception(data: bytes) -> None:
    assert parse_event(data) is None


def test_an_unknown_default_zone_is_none_not_an_exception() -> None:
    assert parse_event(FLOATING, default_zone="Mars/Olympus") is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [("SEQUENCE:many", 0), ("SEQUENCE:-1", -1), ("SEQUENCE:12", 12)],
)
def test_a_sequence_is_read_leniently(line: str, expected: int) -> None:
    data = IN_UTC.replace(b"SEQUENCE:7", line.encode())
    parsed = parse_event(data)
    assert parsed is not None and parsed.sequence == expected


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_parse_event_never_raises(data: bytes) -> None:
    parse_event(data)


# -- recurring events: the occurrences a room's busy blocks are made of -------------------------------
AT = datetime(2026, 11, 27, tzinfo=UTC)


def series(*lines: str, start: str = "DTSTART;TZID=Europe/Stockholm:20261005T100000",
           end: str = "DTEND;TZID=Europe/Stockholm:20261005T110000", extra: str = "") -> bytes:
    body = "\n".join(lines)
    return ics(f"""
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:serie-1
DTSTAMP:20260101T000000Z
SUMMARY:Ledningsgruppen
{start}
{end}
{body}
END:VEVENT
{extra}
END:VCALENDAR""".replace("\n\n", "\n"))


def starts(parsed) -> list[datetime]:  # noqa: ANN001
    return [b for b, _ in parsed.occurrences]


def test_a_weekly_series_keeps_its_wall_time_across_the_dst_change_and_its_length() -> None:
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20261231"), at=AT)
    # From a month before `at`: 26 October is before it, 2 November the first in the window.
    assert starts(parsed)[0] == datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # 10:00 CET
    assert starts(parsed)[-1] == datetime(2026, 12, 28, 9, 0, tzinfo=UTC)  # UNTIL as a DATE includes its day
    assert len(parsed.occurrences) == 9 and all(e - b == timedelta(hours=1) for b, e in parsed.occurrences)
    summer = parse_event(series("RRULE:FREQ=WEEKLY;COUNT=30", start="DTSTART;TZID=Europe/Stockholm:20270301T090000",
                                end="DTEND;TZID=Europe/Stockholm:20270301T100000"), at=AT)
    assert datetime(2027, 3, 22, 8, 0, tzinfo=UTC) in starts(summer)  # 09:00 CET
    assert datetime(2027, 3, 29, 7, 0, tzinfo=UTC) in starts(summer)  # 09:00 CEST


def test_exdates_moved_and_cancelled_instances_are_applied() -> None:
    moved = """BEGIN:VEVENT
UID:serie-1
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Stockholm:20261130T100000
DTSTART;TZID=Europe/Stockholm:20261201T140000
DTEND;TZID=Europe/Stockholm:20261201T153000
END:VEVENT
BEGIN:VEVENT
UID:serie-1
DTSTAMP:20260101T000000Z
RECURRENCE-ID;TZID=Europe/Stockholm:20261207T100000
STATUS:CANCELLED
DTSTART;TZID=Europe/Stockholm:20261207T100000
DTEND;TZID=Europe/Stockholm:20261207T110000
END:VEVENT"""
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;COUNT=11", "EXDATE;TZID=Europe/Stockholm:20261109T100000",
                                extra=moved), at=AT)
    assert parsed.occurrences == (
        (datetime(2026, 11, 2, 9, 0, tzinfo=UTC), datetime(2026, 11, 2, 10, 0, tzinfo=UTC)),
        (datetime(2026, 11, 16, 9, 0, tzinfo=UTC), datetime(2026, 11, 16, 10, 0, tzinfo=UTC)),
        (datetime(2026, 11, 23, 9, 0, tzinfo=UTC), datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        (datetime(2026, 12, 1, 13, 0, tzinfo=UTC), datetime(2026, 12, 1, 14, 30, tzinfo=UTC)),
        (datetime(2026, 12, 14, 9, 0, tzinfo=UTC), datetime(2026, 12, 14, 10, 0, tzinfo=UTC)),
    )


def instance(rid: str, *lines: str) -> str:
    """A VEVENT of its own for an instance of `series` (its RECURRENCE-ID line, then its own lines)."""
    return "\n".join(["BEGIN:VEVENT", "UID:serie-1", "DTSTAMP:20260101T000000Z", rid, *lines, "END:VEVENT"])


def test_a_this_and_future_change_moves_every_later_instance_in_wall_time() -> None:
    # From 23 November on, the Monday meeting is at 13:00 for 90 minutes; the 7 December instance
    # has its own time still, and the series stops on 11 January for good.
    later = "\n".join([
        instance("RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Stockholm:20261123T100000",
                 "DTSTART;TZID=Europe/Stockholm:20261123T130000", "DTEND;TZID=Europe/Stockholm:20261123T143000"),
        instance("RECURRENCE-ID;TZID=Europe/Stockholm:20261207T100000",
                 "DTSTART;TZID=Europe/Stockholm:20261208T080000", "DTEND;TZID=Europe/Stockholm:20261208T090000"),
        instance("RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Stockholm:20270111T100000", "STATUS:CANCELLED")])
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;BYDAY=MO", extra=later), at=AT)
    hour, ninety = timedelta(hours=1), timedelta(minutes=90)
    expected = [(datetime(2026, 11, d, 9, 0, tzinfo=UTC), hour) for d in (2, 9, 16)]
    expected += [(datetime(2026, 11, 23, 12, 0, tzinfo=UTC), ninety), (datetime(2026, 11, 30, 12, 0, tzinfo=UTC), ninety),
                 (datetime(2026, 12, 8, 7, 0, tzinfo=UTC), hour)]
    expected += [(datetime(2026, 12, d, 12, 0, tzinfo=UTC), ninety) for d in (14, 21, 28)]
    expected += [(datetime(2027, 1, 4, 12, 0, tzinfo=UTC), ninety)]
    assert [(b, e - b) for b, e in parsed.occurrences] == expected
    # Ended by the cancellation: nothing to read again later.
    assert parsed.read_until is None


def test_a_this_and_future_change_keeps_the_wall_time_across_dst_and_may_pull_instances_into_the_window() -> None:
    # The Monday series moved two days earlier for good from 1 March 2027 on: to Saturdays, and
    # 10:00 stays 10:00 over the switch to summer time on 28 March.
    earlier = instance("RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Stockholm:20270301T100000",
                       "DTSTART;TZID=Europe/Stockholm:20270227T100000", "DTEND;TZID=Europe/Stockholm:20270227T110000")
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;BYDAY=MO", extra=earlier), at=AT)
    got = starts(parsed)
    assert datetime(2027, 2, 22, 9, 0, tzinfo=UTC) in got  # a Monday before the change, 10:00 CET
    assert datetime(2027, 2, 27, 9, 0, tzinfo=UTC) in got and datetime(2027, 3, 1, 9, 0, tzinfo=UTC) not in got
    assert datetime(2027, 3, 27, 9, 0, tzinfo=UTC) in got  # Saturday, 10:00 CET
    assert datetime(2027, 4, 3, 8, 0, tzinfo=UTC) in got  # Saturday, 10:00 CEST
    # Saturdays up to the end of the window, the last ones from Mondays past it.
    window_end = AT + timedelta(days=731)
    assert max(got) > window_end - timedelta(days=7) and all(b < window_end for b in got)


def test_a_this_and_future_change_is_read_in_the_series_own_zone() -> None:
    # Google writes the RECURRENCE-ID in UTC for a series in local time: the same instant, no shift.
    in_utc = instance("RECURRENCE-ID;RANGE=THISANDFUTURE:20261123T090000Z",
                          "DTSTART;TZID=Europe/Stockholm:20261123T100000", "DTEND;TZID=Europe/Stockholm:20261123T120000")
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=12", extra=in_utc), at=AT)
    assert [(b, e - b) for b, e in parsed.occurrences if b >= datetime(2026, 11, 23, tzinfo=UTC)][:2] == [
        (datetime(2026, 11, 23, 9, 0, tzinfo=UTC), timedelta(hours=2)),
        (datetime(2026, 11, 30, 9, 0, tzinfo=UTC), timedelta(hours=2))]
    # A series in New York keeps New York's wall time, whatever the default zone.
    new_york = instance("RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=America/New_York:20261123T090000",
                            "DTSTART;TZID=America/New_York:20261123T093000", "DTEND;TZID=America/New_York:20261123T103000")
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=12", start="DTSTART;TZID=America/New_York:20261005T090000",
                                end="DTEND;TZID=America/New_York:20261005T100000", extra=new_york), at=AT)
    assert datetime(2026, 11, 30, 14, 30, tzinfo=UTC) in starts(parsed)  # 09:30 EST
    assert datetime(2026, 11, 16, 14, 0, tzinfo=UTC) in starts(parsed)  # before the change: 09:00 EST
    # Ended by its COUNT within the window: nothing left to read again later.
    assert parsed.read_until is None


def test_a_shifted_series_whose_count_runs_out_just_past_the_window_is_read_again() -> None:
    # Read on 1 March 2026, the window ends on 1 March 2028; the 105th Wednesday, moved a day later
    # for good from December on, falls just past it: the series goes on beyond what was read.
    shifted = instance("RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Stockholm:20261202T100000",
                       "DTSTART;TZID=Europe/Stockholm:20261203T100000", "DTEND;TZID=Europe/Stockholm:20261203T110000")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    start, end = "DTSTART;TZID=Europe/Stockholm:20260304T100000", "DTEND;TZID=Europe/Stockholm:20260304T110000"
    plain = parse_event(series("RRULE:FREQ=WEEKLY;COUNT=105", start=start, end=end), at=at)
    moved = parse_event(series("RRULE:FREQ=WEEKLY;COUNT=105", start=start, end=end, extra=shifted), at=at)
    assert plain.read_until == moved.read_until == datetime(2028, 3, 1, tzinfo=UTC)
    assert starts(moved)[-1] == starts(plain)[-1] + timedelta(days=1)


def test_an_all_day_this_and_future_change_keeps_whole_local_days() -> None:
    # Saturdays, one day each; from 20 March on, Saturday and Sunday.
    two_days = instance("RECURRENCE-ID;RANGE=THISANDFUTURE;VALUE=DATE:20270320",
                            "DTSTART;VALUE=DATE:20270320", "DTEND;VALUE=DATE:20270322")
    parsed = parse_event(series("RRULE:FREQ=WEEKLY;COUNT=20", start="DTSTART;VALUE=DATE:20270306",
                                end="DTEND;VALUE=DATE:20270307", extra=two_days), at=AT)
    spans = {b: e for b, e in parsed.occurrences}
    assert spans[datetime(2027, 3, 12, 23, 0, tzinfo=UTC)] == datetime(2027, 3, 13, 23, 0, tzinfo=UTC)
    assert spans[datetime(2027, 3, 19, 23, 0, tzinfo=UTC)] == datetime(2027, 3, 21, 23, 0, tzinfo=UTC)
    # Over the switch to summer time on Sunday 28 March: local midnight to midnight, 47 hours.
    assert spans[datetime(2027, 3, 26, 23, 0, tzinfo=UTC)] == datetime(2027, 3, 28, 22, 0, tzinfo=UTC)


def test_an_all_day_yearly_series_holds_whole_local_days_in_a_two_year_window() -> None:
    parsed = parse_event(series("RRULE:FREQ=YEARLY", start="DTSTART;VALUE=DATE:20000606",
                                end="DTEND;VALUE=DATE:20000607"), at=AT)
    assert parsed.occurrences == (
        (datetime(2027, 6, 5, 22, 0, tzinfo=UTC), datetime(2027, 6, 6, 22, 0, tzinfo=UTC)),
        (datetime(2028, 6, 5, 22, 0, tzinfo=UTC), datetime(2028, 6, 6, 22, 0, tzinfo=UTC)),
    )


def test_rdates_add_instances_and_a_series_without_end_stops_at_the_cap() -> None:
    parsed = parse_event(series("RDATE;TZID=Europe/Stockholm:20261210T150000,20261211T150000"), at=AT)
    assert starts(parsed) == [datetime(2026, 12, 10, 14, 0, tzinfo=UTC), datetime(2026, 12, 11, 14, 0, tzinfo=UTC)]
    daily = parse_event(series("RRULE:FREQ=DAILY"), at=AT)
    assert 731 <= len(daily.occurrences) <= 763  # a month before to two years after, one a day
    hourly_days = parse_event(series("RRULE:FREQ=DAILY;BYHOUR=8,9,10,11,12,13,14,15"), at=AT)
    assert len(hourly_days.occurrences) == 1000  # at most MAX_OCCURRENCES, the earliest


def test_a_rule_within_the_day_is_one_span_and_a_broken_rule_holds_the_first_time() -> None:
    minutely = parse_event(series("RRULE:FREQ=MINUTELY;UNTIL=20261210T120000Z"), at=AT)
    assert minutely.occurrences == ((datetime(2026, 10, 27, tzinfo=UTC), datetime(2026, 12, 10, 13, 0, tzinfo=UTC)),)
    forever = parse_event(series("RRULE:FREQ=SECONDLY", start="DTSTART;VALUE=DATE:20200105",
                                 end="DTEND;VALUE=DATE:20200106"), at=AT)
    assert forever.occurrences == ((datetime(2026, 10, 27, tzinfo=UTC), datetime(2028, 11, 27, tzinfo=UTC)),)
    broken = parse_event(series("RRULE:FREQ=WEEKLY;BYDAY=XX"), at=AT)
    assert broken is not None and broken.occurrences is None
    assert broken.spans() == [(datetime(2026, 10, 5, 8, 0, tzinfo=UTC), datetime(2026, 10, 5, 9, 0, tzinfo=UTC))]


@settings(max_examples=60, deadline=None)
@given(interval=st.integers(1, 3), count=st.integers(1, 60), hour=st.integers(0, 23), minutes=st.integers(15, 300),
       first=st.dates(min_value=datetime(2026, 6, 1).date(), max_value=datetime(2027, 6, 1).date()),
       skipped=st.sets(st.integers(0, 59), max_size=5))
def test_daily_occurrences_match_a_wall_clock_reference(interval, count, hour, minutes, first, skipped) -> None:
    """Each occurrence is the DTSTART's wall time on its day in Stockholm, for the master's length,
    less the EXDATEs, inside the window: computed here without any rule library."""
    start = datetime(first.year, first.month, first.day, hour, 0)
    exdates = ",".join((start + timedelta(days=interval * i)).strftime("%Y%m%dT%H%M%S") for i in sorted(skipped))
    lines = [f"RRULE:FREQ=DAILY;INTERVAL={interval};COUNT={count}"]
    if exdates:
        lines.append(f"EXDATE;TZID=Europe/Stockholm:{exdates}")
    end = start + timedelta(minutes=minutes)
    parsed = parse_event(series(*lines, start=f"DTSTART;TZID=Europe/Stockholm:{start:%Y%m%dT%H%M%S}",
                                end=f"DTEND;TZID=Europe/Stockholm:{end:%Y%m%dT%H%M%S}"), at=AT)
    length = end.replace(tzinfo=STHLM).astimezone(UTC) - start.replace(tzinfo=STHLM).astimezone(UTC)
    expected = []
    for i in range(count):
        if i in skipped:
            continue
        wall = start + timedelta(days=interval * i)
        begin = wall.replace(tzinfo=STHLM).astimezone(UTC)
        if begin + length > AT - timedelta(days=31) and begin < AT + timedelta(days=731):
            expected.append((begin, begin + length))
    assert list(parsed.occurrences) == expected


def one(*lines: str, extra: str = "") -> bytes:
    return ics("\n".join(["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN", "BEGIN:VEVENT", "UID:u1",
                          "DTSTAMP:20260101T000000Z", *lines, "END:VEVENT"]) + "\n" + extra + "END:VCALENDAR")


# Rules dateutil would walk for minutes, or forever: each is answered at once (the timeout is the
# hang guard), and what it blocks is given.
HOUR = timedelta(hours=1)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("lines, expected", [
    # INTERVAL=0 repeats DTSTART forever: the event holds its first time only.
    (("DTSTART:20200101T100000Z", "DTEND:20200101T110000Z", "RRULE:FREQ=DAILY;INTERVAL=0"), None),
    # A day that no allowed month has: walked to the year 9999 otherwise.
    (("DTSTART:20200101T100000Z", "DTEND:20200101T110000Z", "RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31"), None),
    (("DTSTART:20200101T100000Z", "DTEND:20200101T110000Z", "RRULE:FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=31;COUNT=5"), None),
    # Every second of the day, from 2020: one span over the window.
    (("DTSTART:20200101T100000Z", "DTEND:20200101T110000Z",
      "RRULE:FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(24))) + ";BYMINUTE=" + ",".join(map(str, range(60)))),
     ((AT - timedelta(days=31), AT + timedelta(days=731)),)),
    # Daily since the year 1, with and without a COUNT that cannot run out: walked from near the window.
    (("DTSTART:00010101T100000Z", "DTEND:00010101T110000Z", "RRULE:FREQ=DAILY"), 762),
    (("DTSTART:00010101T100000Z", "DTEND:00010101T110000Z", "RRULE:FREQ=DAILY;COUNT=100000000"), 762),
    # Hourly three times: from the first start to the end of the third.
    (("DTSTART;TZID=Europe/Stockholm:20261202T090000", "DTEND;TZID=Europe/Stockholm:20261202T093000",
      "RRULE:FREQ=HOURLY;COUNT=3"), ((datetime(2026, 12, 2, 8, 0, tzinfo=UTC), datetime(2026, 12, 2, 10, 30, tzinfo=UTC)),)),
])
def test_rules_that_would_walk_for_ever_are_bounded(lines, expected) -> None:
    parsed = parse_event(one(*lines), at=AT)
    assert parsed is not None
    if expected is None:
        assert parsed.occurrences is None and len(parsed.spans()) == 1
    elif isinstance(expected, int):
        assert len(parsed.occurrences) == expected
        assert all(e - b == HOUR for b, e in parsed.occurrences)
    else:
        assert parsed.occurrences == expected


def test_what_clients_write_around_a_series_is_read_as_they_mean_it() -> None:
    # An all-day series starting on the day summer time begins still holds whole days.
    dst = parse_event(one("DTSTART;VALUE=DATE:20270328", "DTEND;VALUE=DATE:20270329", "RRULE:FREQ=WEEKLY;COUNT=2"), at=AT)
    assert dst.occurrences == ((datetime(2027, 3, 27, 23, 0, tzinfo=UTC), datetime(2027, 3, 28, 22, 0, tzinfo=UTC)),
                               (datetime(2027, 4, 3, 22, 0, tzinfo=UTC), datetime(2027, 4, 4, 22, 0, tzinfo=UTC)))
    # An RDATE period lasts as long as itself.
    period = parse_event(one("DTSTART:20261201T090000Z", "DTEND:20261201T100000Z",
                             "RDATE;VALUE=PERIOD:20261210T090000Z/20261210T140000Z,20261211T090000Z/PT5H"), at=AT)
    assert [e - b for b, e in period.occurrences] == [HOUR, 5 * HOUR, 5 * HOUR]
    # A room invited to two occurrences of someone else's series gets only those, with no master.
    instances = "".join(f"BEGIN:VEVENT\nUID:u1\nDTSTAMP:20260101T000000Z\nRECURRENCE-ID:2026120{d}T090000Z\n"
                        f"DTSTART:2026120{d}T090000Z\nDTEND:2026120{d}T100000Z\nEND:VEVENT\n" for d in (3, 5))
    only = parse_event(ics("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\n" + instances + "END:VCALENDAR"), at=AT)
    assert [b.day for b, _ in only.occurrences] == [3, 5]
    # DTSTART is an occurrence even where the rule does not match it; X- parts are ignored.
    monday = parse_event(one("DTSTART;TZID=Europe/Stockholm:20261130T090000", "DTEND;TZID=Europe/Stockholm:20261130T100000",
                             "RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=2;X-NAME=x"), at=AT)
    assert [b.day for b, _ in monday.occurrences] == [30, 1, 3]
    # An EXDATE given as a DATE for a timed series leaves out that day's occurrence.
    exdate = parse_event(one("DTSTART:20261201T090000Z", "DTEND:20261201T100000Z", "RRULE:FREQ=DAILY;COUNT=3",
                             "EXDATE;VALUE=DATE:20261202"), at=AT)
    assert [b.day for b, _ in exdate.occurrences] == [1, 3]


def test_a_series_that_goes_on_past_the_window_says_how_far_it_was_read() -> None:
    times = ("DTSTART:20261201T090000Z", "DTEND:20261201T100000Z")
    window_end = AT + timedelta(days=731)
    assert parse_event(one(*times, "RRULE:FREQ=WEEKLY;BYDAY=MO"), at=AT).read_until == window_end
    assert parse_event(one(*times, "RRULE:FREQ=WEEKLY;UNTIL=20301231T000000Z"), at=AT).read_until == window_end
    # COUNT not used up by the window's end (one Monday a week, 110 of them): it goes on.
    assert parse_event(one(*times, "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=110"), at=AT).read_until == window_end
    # Ended within the window: nothing more to read.
    for rule in ("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10", "RRULE:FREQ=WEEKLY;UNTIL=20271231T000000Z", "RRULE:FREQ=HOURLY;COUNT=3"):
        assert parse_event(one(*times, rule), at=AT).read_until is None, rule
    # Cut short at MAX_OCCURRENCES: read up to the first occurrence not kept (the next 08:00).
    capped = parse_event(one(*times, "RRULE:FREQ=DAILY;BYHOUR=8,14"), at=AT)
    assert len(capped.occurrences) == 1000 and capped.read_until == capped.occurrences[-1][0] + timedelta(hours=18)
    # Starting after the window: no occurrence yet, but read to the window's end.
    later = parse_event(one("DTSTART:20300107T090000Z", "DTEND:20300107T100000Z", "RRULE:FREQ=WEEKLY"), at=AT)
    assert later.occurrences == () and later.read_until == window_end and later.spans() == []
