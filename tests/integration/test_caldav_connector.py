"""The CalDAV connector against real Radicale and Xandikos servers."""
from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest

from connectors.calendar import (
    CalendarAuthError,
    CalendarPreconditionFailed,
    CalendarRejected,
    CalendarUidConflict,
    CalendarUnavailable,
    CaldavConnector,
    make_connector,
)
from connectors.calendar.base import CalendarAccount
from tests.support.caldav_servers import CaldavServer
from tests.support.vdirsyncer import Vdirsyncer


def event(uid: str, summary: str = "Forummöte", sequence: int = 0) -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//forumbridge//tests//EN\r\n"
        "BEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nSEQUENCE:{sequence}\r\nDTSTAMP:20270101T000000Z\r\n"
        "DTSTART:20270405T070000Z\r\nDTEND:20270405T100000Z\r\n"
        f"SUMMARY:{summary}\r\nLOCATION:Tillväxten\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode("utf-8")


def through_proxy(server: CaldavServer, proxy) -> CaldavConnector:  # noqa: ANN001
    """A connector whose account is the proxy in front of `server`, with the server's credentials."""
    return make_connector("caldav", [CalendarAccount(proxy.origin + "/", server.username or "", server.password or "")],
                          timeout=5)


def new_uid() -> str:
    return f"{uuid.uuid4()}@forumbridge"


def summary_of(data: bytes) -> str:
    for line in data.decode("utf-8").split("\r\n"):
        if line.startswith("SUMMARY:"):
            return line[len("SUMMARY:"):]
    raise AssertionError(f"no SUMMARY in {data!r}")


@pytest.fixture
async def connector(caldav_server: CaldavServer) -> AsyncIterator[CaldavConnector]:
    conn = make_connector("caldav", caldav_server.accounts, timeout=5)
    yield conn
    await conn.close()


class Outsider:
    """Someone else's calendar client, writing past our connector."""

    def __init__(self, server: CaldavServer) -> None:
        self.server = server

    def put(self, href: str, data: bytes) -> None:
        status, _, body = self.server.request("PUT", self.server.origin + href, data,
                                              {"Content-Type": "text/calendar; charset=utf-8"})
        assert status in (201, 204), (status, body)

    def delete(self, href: str) -> None:
        status, _, body = self.server.request("DELETE", self.server.origin + href)
        assert status in (200, 204), (status, body)

    def hrefs(self, calendar_url: str) -> list[str]:
        status, _, body = self.server.request("PROPFIND", calendar_url, None, {"Depth": "1"})
        assert status == 207, status
        hrefs = (e.text or "" for e in ElementTree.fromstring(body).iter("{DAV:}href"))
        return [h for h in hrefs if h.endswith(".ics")]


@pytest.fixture
def outsider(caldav_server: CaldavServer) -> Outsider:
    return Outsider(caldav_server)


async def test_a_created_event_reads_back_with_the_etag_the_put_returned(connector, calendar_url):
    uid = new_uid()
    href, etag = await connector.put(calendar_url, uid, event(uid), None)

    assert href == connector.object_href(calendar_url, uid)
    assert etag  # both servers send the ETag of what they stored
    stored = await connector.get(calendar_url, href)
    assert stored is not None
    assert stored.href == href and stored.etag == etag
    assert f"UID:{uid}".encode() in stored.data and b"\r\n" in stored.data
    assert summary_of(stored.data) == "Forummöte"


async def test_object_names_are_safe_and_the_same_for_every_retry(connector, calendar_url):
    uid = "Möte 5/4 @ Tillväxten?#"
    href = connector.object_href(calendar_url, uid)

    assert href == connector.object_href(calendar_url.rstrip("/"), uid)
    assert href.rsplit("/", 1)[1].replace("-", "").replace(".", "").isalnum()
    assert (await connector.put(calendar_url, uid, event(uid), None))[0] == href
    assert (await connector.get(calendar_url, href)) is not None


async def test_creating_the_same_uid_twice_is_refused_and_leaves_one_copy(connector, calendar_url, outsider):
    uid = new_uid()
    await connector.put(calendar_url, uid, event(uid, "first"), None)

    with pytest.raises(CalendarPreconditionFailed):
        await connector.put(calendar_url, uid, event(uid, "second"), None)

    assert len(outsider.hrefs(calendar_url)) == 1
    changes = await connector.changes(calendar_url, None)
    assert [summary_of(o.data) for o in changes.changed] == ["first"]


async def test_a_uid_held_by_another_client_object_is_a_uid_conflict(connector, calendar_url, outsider):
    uid = new_uid()
    outsider.put(urlsplit(calendar_url).path + "their-name.ics", event(uid))

    with pytest.raises(CalendarUidConflict):
        await connector.put(calendar_url, uid, event(uid), None)


async def test_an_update_with_the_current_etag_is_stored(connector, calendar_url):
    uid = new_uid()
    href, etag = await connector.put(calendar_url, uid, event(uid, "before"), None)

    href2, etag2 = await connector.put(calendar_url, uid, event(uid, "after", sequence=1), etag)

    assert href2 == href and etag2 and etag2 != etag
    stored = await connector.get(calendar_url, href)
    assert stored is not None and stored.etag == etag2 and summary_of(stored.data) == "after"


async def test_an_update_with_a_stale_etag_is_refused_and_changes_nothing(connector, calendar_url):
    uid = new_uid()
    href, stale = await connector.put(calendar_url, uid, event(uid, "v1"), None)
    _, current = await connector.put(calendar_url, uid, event(uid, "v2", sequence=1), stale)

    with pytest.raises(CalendarPreconditionFailed):
        await connector.put(calendar_url, uid, event(uid, "v3", sequence=2), stale)

    stored = await connector.get(calendar_url, href)
    assert stored is not None and stored.etag == current and summary_of(stored.data) == "v2"


async def test_an_update_of_an_object_someone_deleted_is_refused(connector, calendar_url, outsider):
    uid = new_uid()
    href, etag = await connector.put(calendar_url, uid, event(uid), None)
    outsider.delete(href)

    with pytest.raises(CalendarPreconditionFailed):
        await connector.put(calendar_url, uid, event(uid, "again"), etag)


async def test_delete_removes_the_event_and_deleting_again_is_harmless(connector, calendar_url):
    uid = new_uid()
    href, etag = await connector.put(calendar_url, uid, event(uid), None)

    await connector.delete(calendar_url, href, etag)

    assert await connector.get(calendar_url, href) is None
    await connector.delete(calendar_url, href, etag)
    await connector.delete(calendar_url, href, None)


async def test_delete_with_a_stale_etag_is_refused(connector, calendar_url):
    uid = new_uid()
    href, stale = await connector.put(calendar_url, uid, event(uid), None)
    await connector.put(calendar_url, uid, event(uid, "moved", sequence=1), stale)

    with pytest.raises(CalendarPreconditionFailed):
        await connector.delete(calendar_url, href, stale)
    assert await connector.get(calendar_url, href) is not None


async def test_get_of_a_missing_object_is_none(connector, calendar_url):
    assert await connector.get(calendar_url, connector.object_href(calendar_url, "nobody")) is None


async def test_changes_without_a_token_list_everything_and_give_a_token(connector, calendar_url):
    written = {}
    for n in range(3):
        uid = new_uid()
        href, etag = await connector.put(calendar_url, uid, event(uid, f"event {n}"), None)
        written[href] = etag

    changes = await connector.changes(calendar_url, None)

    assert changes.full and changes.sync_token and changes.deleted == []
    assert {o.href: o.etag for o in changes.changed} == written
    assert sorted(summary_of(o.data) for o in changes.changed) == ["event 0", "event 1", "event 2"]


async def test_changes_since_a_token_report_exactly_what_another_client_changed_and_deleted(
        connector, calendar_url, outsider):
    hrefs = []
    for n in range(3):
        uid = new_uid()
        hrefs.append((uid, (await connector.put(calendar_url, uid, event(uid, f"event {n}"), None))[0]))
    first = await connector.changes(calendar_url, None)
    known = {o.href: o.etag for o in first.changed}

    (moved_uid, moved), (_, removed), _ = hrefs
    outsider.put(moved, event(moved_uid, "moved in Thunderbird", sequence=1))
    outsider.delete(removed)
    later = await connector.changes(calendar_url, first.sync_token, known)

    assert not later.full
    assert [o.href for o in later.changed] == [moved]
    assert summary_of(later.changed[0].data) == "moved in Thunderbird"
    assert later.deleted == [removed]
    assert later.sync_token and later.sync_token != first.sync_token

    quiet = await connector.changes(calendar_url, later.sync_token)
    assert (quiet.changed, quiet.deleted, quiet.full) == ([], [], False)


async def test_edits_made_in_a_client_that_syncs_with_vdirsyncer_come_back_as_changes(
        connector, caldav_server, calendar_url, tmp_path):
    moved, removed, untouched = new_uid(), new_uid(), new_uid()
    for uid in (moved, removed, untouched):
        await connector.put(calendar_url, uid, event(uid, "as booked"), None)
    start = await connector.changes(calendar_url, None)
    client = Vdirsyncer(caldav_server, calendar_url, tmp_path / "vdirsyncer")
    client.sync()

    path = client.file_with(moved)
    path.write_text(path.read_text(encoding="utf-8").replace("SUMMARY:as booked", "SUMMARY:moved by hand"),
                    encoding="utf-8")
    client.file_with(removed).unlink()
    client.sync()
    changes = await connector.changes(calendar_url, start.sync_token, {o.href: o.etag for o in start.changed})

    assert [summary_of(o.data) for o in changes.changed] == ["moved by hand"]
    assert changes.changed[0].href == connector.object_href(calendar_url, moved)
    assert changes.deleted == [connector.object_href(calendar_url, removed)]


async def test_our_own_writes_are_not_fetched_again_when_the_caller_knows_their_etags(connector, calendar_url):
    start = await connector.changes(calendar_url, None)
    uid = new_uid()
    href, etag = await connector.put(calendar_url, uid, event(uid), None)

    changes = await connector.changes(calendar_url, start.sync_token, {href: etag})

    assert changes.changed == [] and changes.deleted == []
    unknown = await connector.changes(calendar_url, start.sync_token, {})
    assert [o.href for o in unknown.changed] == [href]


async def test_a_token_the_server_does_not_know_falls_back_to_a_full_listing_without_losing_changes(
        connector, calendar_url, outsider):
    kept, moved, removed = new_uid(), new_uid(), new_uid()
    known = {}
    for uid in (kept, moved, removed):
        href, etag = await connector.put(calendar_url, uid, event(uid), None)
        known[href] = etag
    first = await connector.changes(calendar_url, None)
    added = new_uid()
    outsider.put(connector.object_href(calendar_url, moved), event(moved, "moved", sequence=1))
    outsider.delete(connector.object_href(calendar_url, removed))
    outsider.put(connector.object_href(calendar_url, added), event(added, "added elsewhere"))

    mangled = first.sync_token[:-6] + "000000"
    changes = await connector.changes(calendar_url, mangled, known)

    assert changes.full
    assert {summary_of(o.data) for o in changes.changed} == {"moved", "added elsewhere"}
    assert changes.deleted == [connector.object_href(calendar_url, removed)]
    assert changes.sync_token and changes.sync_token != mangled
    follow_up = await connector.changes(calendar_url, changes.sync_token)
    assert not follow_up.full and follow_up.changed == [] and follow_up.deleted == []


async def test_a_full_listing_without_known_etags_returns_the_whole_calendar(connector, calendar_url):
    uid = new_uid()
    href, _ = await connector.put(calendar_url, uid, event(uid), None)

    changes = await connector.changes(calendar_url, "http://radicale.org/ns/sync/nonsense", None)

    assert changes.full and [o.href for o in changes.changed] == [href] and changes.deleted == []


async def test_multiget_returns_the_objects_there_and_leaves_out_the_missing(connector, calendar_url):
    uids = [new_uid() for _ in range(3)]
    hrefs = [(await connector.put(calendar_url, uid, event(uid, uid), None))[0] for uid in uids]
    missing = connector.object_href(calendar_url, "never-written")

    found = await connector.multiget(calendar_url, [*hrefs, missing])

    assert sorted(o.href for o in found) == sorted(hrefs)
    assert all(o.etag and summary_of(o.data) == uids[hrefs.index(o.href)] for o in found)
    assert await connector.multiget(calendar_url, []) == []


async def test_ensure_calendar_creates_a_missing_calendar_once(connector, caldav_server):
    url = f"{caldav_server.calendars_url}made-{uuid.uuid4().hex[:8]}/"

    assert await connector.ensure_calendar(url, "Rum Tillväxten") is True
    assert await connector.ensure_calendar(url) is False
    assert (await connector.changes(url, None)).changed == []


async def test_a_calendar_that_does_not_exist_is_rejected(connector, caldav_server):
    url = f"{caldav_server.calendars_url}missing-{uuid.uuid4().hex[:8]}/"

    with pytest.raises(CalendarRejected):
        await connector.changes(url, None)


async def test_a_stopped_server_is_unavailable_and_a_restart_keeps_the_data(connector, caldav_server, calendar_url):
    uid = new_uid()
    href, etag = await connector.put(calendar_url, uid, event(uid), None)
    token = (await connector.changes(calendar_url, None)).sync_token

    caldav_server.stop()
    for attempt in (connector.get(calendar_url, href), connector.put(calendar_url, uid, event(uid), etag),
                    connector.changes(calendar_url, token), connector.delete(calendar_url, href, etag)):
        with pytest.raises(CalendarUnavailable):
            await attempt
    caldav_server.start()

    stored = await connector.get(calendar_url, href)
    assert stored is not None and stored.etag == etag
    changes = await connector.changes(calendar_url, token, {href: etag})
    assert (changes.changed, changes.deleted) == ([], [])


async def test_a_server_that_accepts_but_never_answers_is_unavailable(calendar_url):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cal/"
        conn = make_connector("caldav", [], timeout=0.5)
        try:
            with pytest.raises(CalendarUnavailable):
                await conn.get(url, "/cal/x.ics")
        finally:
            await conn.close()


@pytest.mark.parametrize("username, password", [
    ("forumbridge", "wrong"),
    ("nobody", "hemligt-lösenord"),
    ("", ""),
])
async def test_wrong_credentials_on_radicale_are_an_auth_error(radicale_server, username, password):
    calendar_url = radicale_server.new_calendar()
    conn = make_connector("caldav", [CalendarAccount(radicale_server.origin + "/", username, password)], timeout=5)
    try:
        for attempt in (conn.get(calendar_url, "/x.ics"), conn.changes(calendar_url, None),
                        conn.put(calendar_url, "u", event("u"), None)):
            with pytest.raises(CalendarAuthError):
                await attempt
    finally:
        await conn.close()


async def test_the_longest_matching_account_prefix_is_used(radicale_server):
    calendar_url = radicale_server.new_calendar()
    accounts = [
        CalendarAccount(radicale_server.origin + "/", "forumbridge", "wrong"),
        CalendarAccount(calendar_url, radicale_server.username, radicale_server.password),
    ]
    conn = make_connector("caldav", accounts, timeout=5)
    try:
        assert (await conn.changes(calendar_url, None)).changed == []
    finally:
        await conn.close()


async def test_an_href_on_another_server_is_refused_without_sending_credentials(connector, calendar_url):
    with pytest.raises(CalendarRejected):
        await connector.get(calendar_url, "http://elsewhere.example/steal.ics")


async def test_a_change_since_a_token_comes_with_its_data_where_the_server_sends_it(
        caldav_server, calendar_url, caldav_proxy, outsider):
    # Radicale sends calendar-data with the sync-collection answer: no calendar-multiget is needed
    # (the proxy refuses it). Xandikos answers 404 for that property: its changes are fetched.
    conn = through_proxy(caldav_server, caldav_proxy)
    url = caldav_proxy.url(calendar_url)
    try:
        uid, other = new_uid(), new_uid()
        known = dict([await conn.put(url, u, event(u), None) for u in (uid, other)])
        first = await conn.changes(url, None, known)
        outsider.put(conn.object_href(url, uid), event(uid, "changed elsewhere", sequence=1))
        if caldav_server.kind == "radicale":
            caldav_proxy.refuse(500, "REPORT", b"calendar-multiget")

        later = await conn.changes(url, first.sync_token, known)

        [changed] = later.changed
        assert (changed.href, summary_of(changed.data)) == (conn.object_href(url, uid), "changed elsewhere")
        current = await conn.get(url, changed.href)
        assert current is not None and (changed.etag, changed.data) == (current.etag, current.data)
        assert not later.full and later.deleted == []
        assert caldav_proxy.refused == []
    finally:
        await conn.close()


async def test_a_server_without_sync_collection_is_listed_with_propfind(caldav_server, calendar_url, caldav_proxy, outsider):
    caldav_proxy.refuse(501, "REPORT", b"sync-collection")
    conn = through_proxy(caldav_server, caldav_proxy)
    url = caldav_proxy.url(calendar_url)
    try:
        kept, removed = new_uid(), new_uid()
        known = dict([await conn.put(url, uid, event(uid), None) for uid in (kept, removed)])
        outsider.put(conn.object_href(url, kept), event(kept, "changed elsewhere", sequence=1))
        outsider.delete(conn.object_href(url, removed))

        changes = await conn.changes(url, None, known)

        assert changes.full and changes.sync_token is None
        assert [summary_of(o.data) for o in changes.changed] == ["changed elsewhere"]
        assert changes.deleted == [conn.object_href(url, removed)]
        assert any(method == "REPORT" for method, _, _ in caldav_proxy.refused)
    finally:
        await conn.close()


@pytest.mark.parametrize("status, error", [
    (500, CalendarUnavailable),
    (502, CalendarUnavailable),
    (503, CalendarUnavailable),
    (429, CalendarUnavailable),
    (408, CalendarUnavailable),
    (400, CalendarRejected),
    (404, CalendarRejected),
    (405, CalendarRejected),
    (409, CalendarRejected),
    (501, CalendarRejected),
    (415, CalendarRejected),
    (412, CalendarPreconditionFailed),
    (401, CalendarAuthError),
    (403, CalendarAuthError),
])
async def test_a_failed_put_raises_the_error_its_status_means(caldav_server, calendar_url, caldav_proxy, status, error):
    caldav_proxy.refuse(status, "PUT")
    conn = through_proxy(caldav_server, caldav_proxy)
    try:
        with pytest.raises(error) as raised:
            await conn.put(caldav_proxy.url(calendar_url), "uid-1", event("uid-1"), None)
        assert raised.value.status == status
    finally:
        await conn.close()


@pytest.mark.parametrize("status, error", [
    (500, CalendarUnavailable),
    (503, CalendarUnavailable),
    (401, CalendarAuthError),
])
async def test_a_failed_sync_report_is_not_taken_for_a_forgotten_token(caldav_server, calendar_url, caldav_proxy, status, error):
    caldav_proxy.refuse(status, "REPORT")
    caldav_proxy.refuse(status, "PROPFIND")
    conn = through_proxy(caldav_server, caldav_proxy)
    try:
        with pytest.raises(error):
            await conn.changes(caldav_proxy.url(calendar_url), "some-token")
    finally:
        await conn.close()


async def test_a_fresh_connector_serves_many_requests_at_once(caldav_server, calendar_url):
    # The outbox and the sync loop start together: the first contact (where the client learns
    # the auth scheme from a 401) must survive requests racing through it.
    for _ in range(3):
        conn = make_connector("caldav", caldav_server.accounts, timeout=5)
        try:
            uids = [new_uid() for _ in range(8)]
            results = await asyncio.gather(*(conn.put(calendar_url, uid, event(uid), None) for uid in uids),
                                           conn.changes(calendar_url, None))
            assert all(etag for _, etag in results[:-1])
        finally:
            await conn.close()


async def test_concurrent_requests_with_a_wrong_password_all_fail_as_auth_errors(radicale_server):
    calendar_url = radicale_server.new_calendar()
    conn = make_connector("caldav", [CalendarAccount(radicale_server.origin + "/", "forumbridge", "wrong")], timeout=5)
    try:
        results = await asyncio.gather(*(conn.get(calendar_url, f"/x{n}.ics") for n in range(6)),
                                       return_exceptions=True)
        assert all(isinstance(r, CalendarAuthError) for r in results), results
    finally:
        await conn.close()
