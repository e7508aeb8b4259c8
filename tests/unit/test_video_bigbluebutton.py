"""BigBlueButton without a server: the API checksum, signed URLs, and webhook checksums both ways."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.video import (
    BigBlueButtonProvider,
    ConferenceInfo,
    MeetingInfo,
    Participant,
    VideoAuthError,
    VideoProvider,
    VideoRejected,
    WebhookRequest,
)
from connectors.video.bigbluebutton import (
    checksum,
    meeting_id_for,
    parse_ref,
    query_string,
    webhook_checksum,
    without_checksum,
)
from tests.support.bbb_standin import BbbStandIn, form_urlencode, mapped_event, webhook_post

SECRET = "8cd8ef52e8e101574e400365b55e11a6"
CALLBACK = "https://forum.example/webhooks/bigbluebutton"
INVITATION = "6f1d2c3b-0a9e-4b8c-9d7e-1f2a3b4c5d6e"
MEETING = "forum-0b5e6c1e8f0c4b7e9a57"
T_JOIN = 1806908400000  # 2027-04-05 07:00 UTC, in ms
START = datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)
END = datetime(2027, 4, 5, 10, 0, tzinfo=timezone.utc)


def provider(**kw: object) -> BigBlueButtonProvider:
    options: dict[str, object] = dict(url="https://bbb.example.org/bigbluebutton/api", secret=SECRET,
                                      checksum="sha256")
    options.update(kw)
    return BigBlueButtonProvider(**options)  # type: ignore[arg-type]


def test_the_documented_checksum_example():
    query = query_string([("name", "Test Meeting"), ("meetingID", "abc123"), ("attendeePW", "111222"),
                          ("moderatorPW", "333444")])
    assert query == "name=Test+Meeting&meetingID=abc123&attendeePW=111222&moderatorPW=333444"
    assert checksum("create", query, "639259d4-9dd8-4b25-bf01-95f9567eaf4b") == \
        "1fcbb0c4fc1f039f73aa6d697d2db9ba7f803f17"


@pytest.mark.parametrize("algorithm, length", [("sha1", 40), ("sha256", 64), ("sha384", 96), ("sha512", 128)])
def test_a_personal_join_url_passes_bbbs_checksum_rule(algorithm, length):
    standin = BbbStandIn(secret=SECRET)
    p = provider(checksum=algorithm)
    meeting = MeetingInfo("m-1", "Forummöte", START, END, MEETING)
    who = Participant(INVITATION, "Åsa Öberg & co", "asa@region.example")
    url = p.personal_url(meeting, ConferenceInfo("bigbluebutton", f"{MEETING}|1806908000123"), who, START)
    parts = urlsplit(url)
    params = parse_qs(parts.query)

    assert parts.path == "/bigbluebutton/api/join" and len(params["checksum"][0]) == length
    assert {k: v[0] for k, v in params.items() if k != "checksum"} == {
        "fullName": "Åsa Öberg & co", "meetingID": MEETING, "role": "VIEWER", "userID": INVITATION,
        "createTime": "1806908000123", "redirect": "true"}
    assert standin.checksum_ok("join", parts.query, params)
    assert not standin.checksum_ok("join", parts.query.replace("VIEWER", "MODERATOR"), params)


def test_a_moderators_url_asks_for_the_moderator_role():
    url = provider().personal_url(MeetingInfo("m-1", "Forummöte", START, END, MEETING),
                                  ConferenceInfo("bigbluebutton", f"{MEETING}|1"),
                                  Participant(INVITATION, "Sekretariatet", "forum@example.org", moderator=True), START)
    assert parse_qs(urlsplit(url).query)["role"] == ["MODERATOR"]


@pytest.mark.parametrize("ref", ["", "abc", "abc|", "abc|12x", "|123"])
def test_a_reference_without_meeting_id_and_create_time_is_rejected(ref):
    with pytest.raises(VideoRejected):
        parse_ref(ref)


def test_meeting_ids_are_kept_when_plain_and_hashed_otherwise():
    assert meeting_id_for(MEETING) == MEETING
    odd = meeting_id_for("a,b c")
    assert odd == meeting_id_for("a,b c") and "," not in odd and odd.startswith("fb")


def test_the_provider_is_a_video_provider_and_reports_presence():
    p = provider()
    assert isinstance(p, VideoProvider) and p.reports_presence and p.name == "bigbluebutton"


# --- webhooks: what bbb-webhooks sends, and what we accept ---------------------------------------

def request(url: str, body: bytes, headers: dict[str, str] | None = None) -> WebhookRequest:
    return WebhookRequest(path="", headers=headers or {"Content-Type": "application/x-www-form-urlencoded"},
                          body=body, url=url)


def joined_and_left(user: str = INVITATION) -> list[dict]:
    return [mapped_event("user-joined", user, MEETING, T_JOIN, name="Åsa Öberg"),
            mapped_event("user-left", user, MEETING, T_JOIN + 45 * 60 * 1000)]


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_a_webhook_signed_as_the_plugin_signs_it_is_accepted_and_parsed(algorithm):
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, algorithm)
    joined, left = provider().parse_webhook(request(url, body))
    assert (joined.invitation_id, joined.kind, joined.at, joined.source) == (
        INVITATION, "joined", START, "bigbluebutton")
    assert (left.invitation_id, left.kind, left.at) == (
        INVITATION, "left", datetime(2027, 4, 5, 7, 45, tzinfo=timezone.utc))


def test_our_checksum_is_the_one_the_plugin_computes():
    # The other way round: the checksum we expect for a body is the one bbb-webhooks appends.
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, "sha1")
    assert url == f"{CALLBACK}?checksum={webhook_checksum(CALLBACK, body, SECRET, 'sha1')}"
    assert body.startswith(b"domain=bbb.example.org&event=%5B%7B%22data%22") and b"&timestamp=" in body


def tampered(how: str) -> tuple[str, bytes]:
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, "sha1")
    if how == "body":
        body = body.replace(INVITATION.encode(), b"00000000-0000-0000-0000-000000000000")
    elif how == "checksum":
        url = url[:-1] + ("0" if url[-1] != "0" else "1")
    elif how == "other secret":
        url, body = webhook_post(CALLBACK, joined_and_left(), SECRET + "x", "sha1")
    elif how == "other callback url":
        url, body = webhook_post("https://elsewhere.example/hook", joined_and_left(), SECRET, "sha1")
        url = CALLBACK + url[url.index("?"):]
    elif how == "no checksum":
        url = CALLBACK
    elif how == "empty checksum":
        url = CALLBACK + "?checksum="
    elif how == "two checksums":
        url = url + "&checksum=" + url.rsplit("=", 1)[1]
    elif how == "sha512 not accepted":
        url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, "sha512")
    elif how == "upper case body":
        body = body.upper()
    return url, body


@pytest.mark.parametrize("how", ["body", "checksum", "other secret", "other callback url", "no checksum",
                                 "empty checksum", "two checksums", "sha512 not accepted", "upper case body"])
def test_a_tampered_webhook_is_refused(how):
    url, body = tampered(how)
    with pytest.raises(VideoAuthError):
        provider().parse_webhook(request(url, body))


def test_the_accepted_checksum_algorithms_can_be_configured():
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, "sha512")
    assert len(provider(webhook_checksums=("sha512",)).parse_webhook(request(url, body))) == 2
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, "sha1")
    with pytest.raises(VideoAuthError):
        provider(checksum="sha256", webhook_checksums=()).parse_webhook(request(url, body))


def test_a_callback_url_with_its_own_query_keeps_it_in_the_checksum():
    registered = CALLBACK + "?site=stockholm"
    url, body = webhook_post(registered, joined_and_left(), SECRET, "sha256")
    assert "?site=stockholm&checksum=" in url
    assert len(provider().parse_webhook(request(url, body))) == 2


def test_behind_a_proxy_the_registered_callback_url_is_used():
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, "sha256")
    seen = "http://10.0.0.5:8080/webhooks/bigbluebutton" + url[url.index("?"):]
    with pytest.raises(VideoAuthError):
        provider().parse_webhook(request(seen, body))
    assert len(provider(callback_url=CALLBACK).parse_webhook(request(seen, body))) == 2


def test_the_plugins_bearer_mode_is_accepted_with_the_shared_secret():
    _, body = webhook_post(CALLBACK, joined_and_left(), SECRET)
    events = provider().parse_webhook(request(CALLBACK, body, {"Authorization": f"Bearer {SECRET}"}))
    assert len(events) == 2
    with pytest.raises(VideoAuthError):
        provider().parse_webhook(request(CALLBACK, body, {"Authorization": "Bearer guess"}))


def test_a_repeated_event_has_the_same_dedup_key_and_other_events_other_keys():
    url, body = webhook_post(CALLBACK, joined_and_left(), SECRET, timestamp=1)
    first = provider().parse_webhook(request(url, body))
    # The same events in another callback (another callback timestamp): still the same events.
    url2, body2 = webhook_post(CALLBACK, joined_and_left(), SECRET, timestamp=2)
    again = provider().parse_webhook(request(url2, body2))
    assert [e.dedup_key for e in first] == [e.dedup_key for e in again]
    assert first[0].dedup_key != first[1].dedup_key
    later = mapped_event("user-joined", INVITATION, MEETING, T_JOIN + 60_000)
    url3, body3 = webhook_post(CALLBACK, [later], SECRET)
    assert provider().parse_webhook(request(url3, body3))[0].dedup_key not in {e.dedup_key for e in first}


@pytest.mark.parametrize("events", [
    [mapped_event("meeting-created", INVITATION, MEETING, T_JOIN)],
    [mapped_event("user-raise-hand-changed", INVITATION, MEETING, T_JOIN)],
    [mapped_event("user-joined", "w_1fewpbchnudl", MEETING, T_JOIN, internal_user_id="w_1fewpbchnudl")],
], ids=["meeting created", "raised hand", "user without our userID"])
def test_events_that_are_not_ours_to_record_give_nothing(events):
    url, body = webhook_post(CALLBACK, events, SECRET)
    assert provider().parse_webhook(request(url, body)) == []


def test_a_single_event_without_the_array_is_read_too():
    # The callback format in BBB's documentation shows one event object, not an array.
    body = ("event=" + form_urlencode(json.dumps(joined_and_left()[0])) + "&timestamp=1532718316953").encode()
    url = f"{CALLBACK}?checksum={webhook_checksum(CALLBACK, body, SECRET)}"
    [event] = provider().parse_webhook(request(url, body))
    assert event.kind == "joined"


@pytest.mark.parametrize("event_field", [
    None, "{not json", '"text"', "[1]", '[{"data": 1}]', '[{"data": {"id": "user-joined"}}]',
    '[{"data": {"id": "user-joined", "attributes": {"user": {"external-user-id": "x"}}, "event": {"ts": "soon"}}}]',
    '[{"data": {"id": "user-joined", "attributes": {"user": {"external-user-id": "x"}}}}]',
], ids=["no event", "not json", "string", "number", "data not object", "no attributes", "ts as text", "no ts"])
def test_a_malformed_webhook_is_rejected(event_field):
    body = (f"event={form_urlencode(event_field)}&" if event_field is not None else "").encode() + b"timestamp=1"
    url = f"{CALLBACK}?checksum={webhook_checksum(CALLBACK, body, SECRET)}"
    with pytest.raises(VideoRejected):
        provider().parse_webhook(request(url, body))


@pytest.mark.parametrize("url, expected", [
    (CALLBACK + "?checksum=abc", CALLBACK),
    (CALLBACK + "?a=1&checksum=abc", CALLBACK + "?a=1"),
    (CALLBACK + "?checksum=abc&a=1", CALLBACK + "?a=1"),
    (CALLBACK + "?a=%20x&checksum=abc&b=2", CALLBACK + "?a=%20x&b=2"),
    (CALLBACK, CALLBACK),
])
def test_the_checksum_comes_out_of_the_url_and_nothing_else_changes(url, expected):
    assert without_checksum(url) == expected


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.sampled_from(["data", "id", "attributes", "user", "meeting", "event", "ts",
                                         "external-user-id", "internal-user-id", "x"]), inner, max_size=5),
                    max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON.map(json.dumps), st.text(max_size=50)))
def test_any_signed_body_gives_events_or_a_rejection_and_nothing_else(event_field):
    body = f"event={form_urlencode(event_field)}&timestamp=1".encode()
    url = f"{CALLBACK}?checksum={webhook_checksum(CALLBACK, body, SECRET)}"
    try:
        events = provider().parse_webhook(request(url, body))
    except VideoRejected:
        return
    assert all(e.invitation_id and e.at.tzinfo is not None for e in events)
