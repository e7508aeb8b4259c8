"""The calendar connector's pure parts: names, account choice, status mapping, registry."""
from __future__ import annotations

import re

import pytest
from caldav.aio import DAVResponse
from hypothesis import given
from hypothesis import strategies as st

from connectors.calendar import (
    CONNECTORS,
    CalendarAccount,
    CalendarAuthError,
    CalendarConnector,
    CalendarPreconditionFailed,
    CalendarRejected,
    CalendarUidConflict,
    CalendarUnavailable,
    CaldavConnector,
    make_connector,
)
from connectors.calendar.caldav import canonical_path, object_name
from connectors.calendar.caldav_transport import choose_account, raise_for_status

SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\.ics")


@given(st.text(min_size=1, max_size=300))
def test_every_uid_gets_a_safe_name_that_is_the_same_every_time(uid):
    name = object_name(uid)
    assert SAFE_NAME.fullmatch(name) and len(name) <= 110
    assert object_name(uid) == name


@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
def test_different_uids_get_different_names(a, b):
    if a != b:
        assert object_name(a) != object_name(b)


def test_our_meeting_uids_are_hashed_and_plain_ones_kept():
    assert object_name("0b5e6c1e-8f0c-4b7e-9a57-1f0f2b3c4d5e") == "0b5e6c1e-8f0c-4b7e-9a57-1f0f2b3c4d5e.ics"
    assert object_name("0b5e6c1e@forumbridge").startswith("h-")
    assert object_name("ABC") != object_name("abc")


@pytest.mark.parametrize("path, canonical", [
    ("/cal/abc.ics", "/cal/abc.ics"),
    ("/cal/a b.ics", "/cal/a%20b.ics"),
    ("/cal/a%20b.ics", "/cal/a%20b.ics"),
    ("/user%40host/x.ics", "/user@host/x.ics"),
    ("/kalender/möte.ics", "/kalender/m%C3%B6te.ics"),
])
def test_hrefs_have_one_spelling(path, canonical):
    assert canonical_path(path) == canonical
    assert canonical_path(canonical) == canonical


def test_the_longest_matching_account_prefix_wins():
    broad = CalendarAccount("https://dav.example.org/", "a", "1")
    narrow = CalendarAccount("https://dav.example.org/rooms/", "b", "2")
    other = CalendarAccount("https://other.example.org/", "c", "3")
    accounts = [broad, narrow, other]

    assert choose_account(accounts, "https://dav.example.org/rooms/tillvaxten/") is narrow
    assert choose_account(accounts, "https://dav.example.org/forum/") is broad
    assert choose_account(accounts, "https://elsewhere.example.org/x/") is None


def answer(status: int, body: bytes = b"") -> DAVResponse:
    return DAVResponse.from_bytes(body, status_code=status)


def dav_error(*conditions: str) -> bytes:
    inner = "".join(conditions)
    return (f'<?xml version="1.0"?><D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">{inner}'
            "<D:responsedescription>why</D:responsedescription></D:error>").encode()


@pytest.mark.parametrize("status, body, error", [
    (412, b"", CalendarPreconditionFailed),
    (412, dav_error("<C:no-uid-conflict/>"), CalendarUidConflict),  # Xandikos
    (409, dav_error("<C:no-uid-conflict/>"), CalendarUidConflict),  # Radicale
    (403, dav_error("<C:no-uid-conflict><D:href>/cal/x.ics</D:href></C:no-uid-conflict>"), CalendarUidConflict),
    (403, dav_error("<D:valid-sync-token/>"), CalendarRejected),
    (403, b"Forbidden", CalendarAuthError),
    (401, b"", CalendarAuthError),
    (400, b"", CalendarRejected),
    (404, b"", CalendarRejected),
    (501, b"", CalendarRejected),
    (408, b"", CalendarUnavailable),
    (423, b"", CalendarUnavailable),  # Locked: Xandikos after a crash left its git lock (test_faults)
    (429, b"", CalendarUnavailable),
    (500, b"", CalendarUnavailable),
    (503, b"", CalendarUnavailable),
])
def test_each_status_raises_the_error_it_means(status, body, error):
    with pytest.raises(error) as raised:
        raise_for_status(answer(status, body), "http://dav.example.org/cal/x.ics", "PUT")
    assert type(raised.value) is error and raised.value.status == status


def test_a_uid_conflict_names_the_other_object_when_the_server_does():
    body = dav_error("<C:no-uid-conflict><D:href>/cal/theirs.ics</D:href></C:no-uid-conflict>")
    with pytest.raises(CalendarUidConflict) as raised:
        raise_for_status(answer(403, body), "http://dav.example.org/cal/x.ics", "PUT")
    assert raised.value.href == "/cal/theirs.ics"
    assert raised.value.preconditions == ("{urn:ietf:params:xml:ns:caldav}no-uid-conflict",)


@pytest.mark.parametrize("status", [200, 201, 204, 207])
def test_success_raises_nothing(status):
    raise_for_status(answer(status), "http://dav.example.org/cal/", "PUT")


def test_the_registry_makes_a_caldav_connector_that_fits_the_port():
    connector = make_connector("caldav", [CalendarAccount("https://dav.example.org/", "u", "p")])
    assert isinstance(connector, CaldavConnector) and isinstance(connector, CalendarConnector)
    assert CONNECTORS["caldav"] is CaldavConnector


def test_an_unknown_connector_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="caldav"):
        make_connector("exchange", [])


def test_an_account_does_not_show_its_password():
    assert "hemligt" not in repr(CalendarAccount("https://dav.example.org/", "u", "hemligt"))


@pytest.mark.parametrize("url", ["ftp://dav.example.org/cal/", "not a url", "/relative/cal/"])
async def test_a_calendar_url_that_is_not_http_is_rejected(url):
    connector = CaldavConnector([])
    with pytest.raises(CalendarRejected):
        await connector.get(url, "x.ics")
    await connector.close()


@pytest.mark.parametrize("url", ["http://[", "https://[::1/cal/", "http://dav.example.org:port/cal/", "ftp://dav.example.org/"])
def test_a_calendar_url_that_cannot_be_parsed_is_rejected_not_a_crash(url):
    # Found by the API fuzz: "http://[" made urlsplit raise ValueError out of the connector (a 500 on sync).
    with pytest.raises(CalendarRejected):
        CaldavConnector().object_href(url, "uid-1@forumbridge")


@given(st.lists(st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@% /äé?#", min_size=1, max_size=12), max_size=20))
def test_known_hrefs_are_keyed_as_resolving_them_would_key_them(names):
    """The sync's hrefs skip `_resolve` when they are plain names in the collection: same keys either way."""
    connector = CaldavConnector()
    calendar_url = "http://127.0.0.1:5232/forumbridge/kalender%20ett/"
    _, path = connector._collection(calendar_url)
    known = {}
    for i, name in enumerate(names):
        for href in (path + name, path + canonical_path(name), "/forumbridge/" + name):
            known[href] = f'"{i}"'
    slow = {}
    for href, etag in known.items():
        slow[connector._resolve(calendar_url, href)[1]] = etag
    assert connector._canonical_known(calendar_url, path, known) == slow
