"""The BigBlueButton provider against a stand-in server on loopback that checks checksums as BBB does."""
from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from yarl import URL

from connectors.video import (
    BigBlueButtonProvider,
    ConferenceInfo,
    MeetingInfo,
    Participant,
    VideoAuthError,
    VideoRejected,
    VideoUnavailable,
    make_provider,
)
from connectors.video.bigbluebutton import meeting_id_for
from tests.support.bbb_standin import BbbStandIn

START = datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)
END = datetime(2027, 4, 5, 10, 0, tzinfo=timezone.utc)
NOW = START - timedelta(days=1)
INVITATION = "6f1d2c3b-0a9e-4b8c-9d7e-1f2a3b4c5d6e"


def meeting(title: str = "Forummöte: regional hållbar tillväxt",
            room_key: str = "forum-0b5e6c1e8f0c4b7e9a57") -> MeetingInfo:
    return MeetingInfo(meeting_id="0b5e6c1e-8f0c-4b7e-9a57-1f0f2b3c4d5e", title=title, starts_at=START,
                       ends_at=END, room_key=room_key, forum_id="forum-1")


def expert(moderator: bool = False) -> Participant:
    return Participant(INVITATION, "Åsa Öberg", "asa.oberg@region.example", moderator=moderator)


@pytest.fixture
async def standin() -> AsyncIterator[BbbStandIn]:
    server = BbbStandIn()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["sha1", "sha256", "sha512"])
async def bbb(request: pytest.FixtureRequest, standin: BbbStandIn) -> AsyncIterator[BigBlueButtonProvider]:
    provider = make_provider("bigbluebutton", {"url": standin.url, "secret": standin.secret,
                                               "checksum": request.param, "timeout_s": 2},
                             clock=lambda: NOW)
    assert isinstance(provider, BigBlueButtonProvider)
    yield provider
    await provider.close()


async def open_url(url: str) -> tuple[int, str, str]:
    """GET as a browser's first request would: (status, Location, body)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(URL(url, encoded=True), allow_redirects=False) as resp:
            return resp.status, resp.headers.get("Location", ""), await resp.text()


async def test_creating_twice_gives_the_same_meeting(bbb, standin):
    first = await bbb.create(meeting())
    second = await bbb.create(meeting())

    assert first == second
    [(meeting_id, held)] = standin.meetings.items()
    assert meeting_id == meeting_id_for(meeting().room_key)
    assert first.provider_ref == f"{meeting_id}|{held.create_time}"
    assert [call for call, _ in standin.calls] == ["create", "create"]
    assert first.dial_in is None  # the stand-in, like a fresh BBB, has the placeholder number


async def test_create_asks_bbb_to_keep_the_meeting_until_the_end_and_not_to_record(bbb, standin):
    await bbb.create(meeting())
    [held] = standin.meetings.values()
    minutes = str(int((END + timedelta(minutes=30) - NOW).total_seconds() // 60))
    assert held.params["meetingExpireIfNoUserJoinedInMinutes"] == minutes
    assert held.params["meetingExpireWhenLastUserLeftInMinutes"] == minutes
    assert held.params["record"] == "false"
    assert held.name == "Forummöte: regional hållbar tillväxt"


@pytest.mark.parametrize("title", ["X", "Ö" * 80, "Möte\tmed\ntabb", "🎉" * 40])
async def test_titles_bbb_would_refuse_are_made_acceptable(bbb, standin, title):
    await bbb.create(meeting(title=title))
    [held] = standin.meetings.values()
    assert 2 <= len(held.name) <= 64


async def test_a_personal_url_lets_the_participant_in_with_their_invitation_id(bbb, standin):
    conference = await bbb.create(meeting())
    status, location, _ = await open_url(bbb.personal_url(meeting(), conference, expert(), NOW))
    assert status == 302 and "/html5client/join?sessionToken=" in location
    moderator_status, _, _ = await open_url(bbb.personal_url(meeting(), conference, expert(moderator=True), NOW))
    assert moderator_status == 302

    [held] = standin.meetings.values()
    assert [(a.user_id, a.full_name, a.role) for a in held.attendees] == [
        (INVITATION, "Åsa Öberg", "VIEWER"), (INVITATION, "Åsa Öberg", "MODERATOR")]
    _, _, info = await open_url(bbb.signed_url("getMeetingInfo", [("meetingID", held.meeting_id)]))
    assert f"<userID>{INVITATION}</userID>" in info


def _tamper(url: str, how: str) -> str:
    if how == "role":
        return url.replace("role=VIEWER", "role=MODERATOR")
    if how == "user":
        return url.replace("userID=6f1d", "userID=0000")
    if how == "name":
        return url.replace("fullName=%C3%85sa", "fullName=Eve")
    if how == "extra parameter":
        return url + "&guest=false"
    if how == "dropped createTime":
        parts = url.split("&")
        return "&".join(p for p in parts if not p.startswith("createTime="))
    if how == "checksum":
        return url[:-1] + ("0" if url[-1] != "0" else "1")
    if how == "no checksum":
        return url[: url.index("&checksum=")]
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["role", "user", "name", "extra parameter", "dropped createTime", "checksum",
                                 "no checksum"])
async def test_a_tampered_join_url_gets_a_checksum_error(bbb, standin, how):
    conference = await bbb.create(meeting())
    url = _tamper(bbb.personal_url(meeting(), conference, expert(), NOW), how)
    status, _, body = await open_url(url)
    assert status == 200 and "<messageKey>checksumError</messageKey>" in body
    assert list(standin.meetings.values())[0].attendees == []


async def test_a_join_url_works_only_for_the_meeting_it_was_made_for(bbb, standin):
    conference = await bbb.create(meeting())
    url = bbb.personal_url(meeting(), conference, expert(), NOW)
    standin.meetings.clear()  # BBB restarted and forgot the meeting
    assert "<messageKey>notFound</messageKey>" in (await open_url(url))[2]

    renewed = await bbb.update(meeting(), conference)
    assert renewed.provider_ref != conference.provider_ref
    assert "<messageKey>mismatchCreateTimeParam</messageKey>" in (await open_url(url))[2]
    assert (await open_url(bbb.personal_url(meeting(), renewed, expert(), NOW)))[0] == 302


async def test_end_ends_the_meeting_and_ending_again_is_fine(bbb, standin):
    conference = await bbb.create(meeting())
    await bbb.end(meeting(), conference)
    assert standin.meetings == {}
    await bbb.end(meeting(), conference)  # notFound counts as ended
    assert [call for call, _ in standin.calls] == ["create", "end", "end"]


async def test_a_wrong_secret_is_an_auth_error(standin):
    provider = BigBlueButtonProvider(standin.url, standin.secret + "x", "sha256")
    try:
        with pytest.raises(VideoAuthError):
            await provider.create(meeting())
    finally:
        await provider.close()


async def test_bbb_refusing_the_request_is_a_rejection(standin):
    provider = BigBlueButtonProvider(standin.url, standin.secret, "sha256", clock=lambda: NOW)
    other = BigBlueButtonProvider(standin.url, standin.secret, "sha256", clock=lambda: NOW)
    other._passwords = lambda meeting_id: ("a1", "m1")  # type: ignore[method-assign]  # another deployment
    try:
        await other.create(meeting())
        with pytest.raises(VideoRejected, match="idNotUnique"):
            await provider.create(meeting())
    finally:
        await provider.close()
        await other.close()


async def test_a_wrong_api_path_is_a_rejection(standin):
    provider = BigBlueButtonProvider(standin.base + "/wrong/api", standin.secret)
    try:
        with pytest.raises(VideoRejected) as caught:
            await provider.create(meeting())
        assert caught.value.status == 404
    finally:
        await provider.close()


async def _stopped(standin: BbbStandIn) -> None:
    await standin.stop()


async def _bad_gateway(standin: BbbStandIn) -> None:
    standin.fail_status = 502


async def _unavailable(standin: BbbStandIn) -> None:
    standin.fail_status = 503


async def _slow(standin: BbbStandIn) -> None:
    standin.delay = 1.5


async def _not_bbb(standin: BbbStandIn) -> None:
    standin.garbage = True


@pytest.mark.parametrize("break_it", [_stopped, _bad_gateway, _unavailable, _slow, _not_bbb],
                         ids=["stopped", "502", "503", "timeout", "not an API answer"])
async def test_bbb_out_of_reach_is_unavailable(standin, break_it):
    provider = BigBlueButtonProvider(standin.url, standin.secret, timeout=0.5, clock=lambda: NOW)
    conference = ConferenceInfo("bigbluebutton", "forum-0b5e6c1e8f0c4b7e9a57|1806908000123")
    await break_it(standin)
    try:
        with pytest.raises(VideoUnavailable):
            await provider.create(meeting())
        with pytest.raises(VideoUnavailable):
            await provider.end(meeting(), conference)
    finally:
        await provider.close()


async def test_a_session_factory_is_used_and_closed_with_the_provider(standin):
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession())
        return made[-1]

    provider = BigBlueButtonProvider(standin.url, standin.secret, session_factory=factory, clock=lambda: NOW)
    await provider.create(meeting())
    await provider.create(meeting())
    await provider.close()
    assert len(made) == 1 and made[0].closed


async def test_a_real_dial_in_number_is_offered(standin):
    standin.dial_number = "+46 10-123 45 67"
    provider = BigBlueButtonProvider(standin.url, standin.secret, clock=lambda: NOW)
    try:
        conference = await provider.create(meeting())
    finally:
        await provider.close()
    [held] = standin.meetings.values()
    assert conference.dial_in == f"+46 10-123 45 67, PIN {held.voice_bridge}"
