"""Static virtual rooms (StarLeaf, Pexip): fixed links per forum or room, attendance from link opens only."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connectors.video import (
    ConferenceInfo,
    MeetingInfo,
    Participant,
    StaticProvider,
    VideoAuthError,
    VideoProvider,
    VideoRejected,
    WebhookRequest,
    make_provider,
)

START = datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)
END = datetime(2027, 4, 5, 10, 0, tzinfo=timezone.utc)
FORUM_ROOM = {"web_url": "https://video.example.org/webapp/#/?conference=forum.tillvaxt",
              "sip_uri": "sip:forum.tillvaxt@video.example.org"}


def meeting(forum_id: str | None = "forum-1", endpoint: str | None = "sip:tillvaxten@video.example.org",
            room_key: str = "forum-0b5e6c1e8f0c4b7e9a57") -> MeetingInfo:
    return MeetingInfo(meeting_id="m-1", title="Forummöte", starts_at=START, ends_at=END, room_key=room_key,
                       forum_id=forum_id, room_video_endpoint=endpoint)


def person(n: int) -> Participant:
    return Participant(invitation_id=f"inv-{n}", name=f"Expert {n}", email=f"e{n}@region.example")


async def test_a_forums_virtual_room_is_its_conference_and_everyones_link():
    p = StaticProvider({"forum-1": FORUM_ROOM})
    conference = await p.create(meeting())
    assert conference == ConferenceInfo("static", "forum-1", FORUM_ROOM["web_url"], FORUM_ROOM["sip_uri"])
    urls = {p.personal_url(meeting(), conference, person(n), START) for n in range(3)}
    assert urls == {FORUM_ROOM["web_url"]}  # no per-person token exists on such services


async def test_a_room_configured_for_the_meeting_wins_over_the_forums():
    own = {"web_url": "https://video.example.org/webapp/#/?conference=extra", "sip_uri": None}
    p = StaticProvider({"forum-1": FORUM_ROOM, "forum-0b5e6c1e8f0c4b7e9a57": own})
    conference = await p.create(meeting())
    assert (conference.provider_ref, conference.host_url, conference.sip_uri) == (
        "forum-0b5e6c1e8f0c4b7e9a57", own["web_url"], None)


async def test_without_configuration_the_host_rooms_endpoint_is_the_sip_uri_and_there_is_no_web_link():
    p = StaticProvider()
    conference = await p.create(meeting(forum_id="other"))
    assert (conference.sip_uri, conference.host_url) == ("sip:tillvaxten@video.example.org", None)
    with pytest.raises(VideoRejected, match="SIP only"):
        p.personal_url(meeting(), conference, person(1), START)


async def test_a_meeting_with_no_room_anywhere_is_rejected():
    with pytest.raises(VideoRejected):
        await StaticProvider({"forum-1": FORUM_ROOM}).create(meeting(forum_id="forum-2", endpoint=None))


async def test_create_update_and_end_call_nothing_and_agree():
    p = StaticProvider({"forum-1": FORUM_ROOM})
    first = await p.create(meeting())
    assert await p.create(meeting()) == first
    assert await p.update(meeting(), first) == first
    await p.end(meeting(), first)
    await p.close()


def test_static_rooms_report_no_presence_and_take_no_webhooks():
    p = StaticProvider()
    assert isinstance(p, VideoProvider) and p.reports_presence is False
    with pytest.raises(VideoAuthError):
        p.parse_webhook(WebhookRequest(path="/", headers={}, body=b"{}", url="https://forum.example/webhooks/static"))


def test_a_conference_of_another_provider_is_refused():
    with pytest.raises(VideoRejected):
        StaticProvider().personal_url(meeting(), ConferenceInfo("jitsi", "room", "https://x/room"), person(1), START)


@pytest.mark.parametrize("config", [
    {"rooms": {"forum-1": FORUM_ROOM}},
    {"forum-1": FORUM_ROOM},
], ids=["rooms table", "tables directly in [video.static]"])
async def test_the_provider_is_built_from_its_config_section(config):
    p = make_provider("static", config)
    assert (await p.create(meeting())).host_url == FORUM_ROOM["web_url"]


@pytest.mark.parametrize("config", [
    {"rooms": {"forum-1": {"web_url": "https://x", "colour": "blue"}}},
    {"rooms": {"forum-1": {}}},
    {"rooms": {"forum-1": FORUM_ROOM}, "extra": 1},
    {"url": "https://x"},
])
def test_a_wrong_static_configuration_is_refused(config):
    with pytest.raises(ValueError, match="video.static"):
        make_provider("static", config)
