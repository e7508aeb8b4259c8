"""VideoProvider for a permanent virtual meeting room (the StarLeaf or Pexip kind of set-up).

Each forum (or meeting) has a virtual room that always exists: a web link for people on their own
device and a SIP URI that room systems dial. Nothing is created or ended, no webhooks arrive,
and the link is the same for everyone: such services have no per-person join token, so a personal
URL cannot tell who opened it. Attendance therefore comes from our own join-link opens only
(`reports_presence` is False).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from connectors.video.base import ConferenceInfo, MeetingInfo, Participant, PresenceEvent, WebhookRequest
from connectors.video.errors import VideoAuthError, VideoRejected


@dataclass(frozen=True)
class VirtualRoom:
    """One permanent room: the web link (if the service offers one) and the SIP URI (if any)."""

    web_url: str | None = None
    sip_uri: str | None = None


class StaticProvider:
    """Conferences are permanent rooms looked up by key; nothing is ever called."""

    name = "static"
    reports_presence = False

    def __init__(self, rooms: Mapping[str, VirtualRoom | Mapping[str, str | None]] | None = None) -> None:
        """`rooms` maps keys to virtual rooms; a key is a forum id or a meeting's room_key.

        A meeting gets, in this order: the room configured under its `room_key`, the room
        configured under its `forum_id`, or (nothing configured) its host room's own video
        endpoint as the SIP URI, with no web link.
        """
        self._rooms: dict[str, VirtualRoom] = {}
        for key, room in (rooms or {}).items():
            if not isinstance(room, VirtualRoom):
                unknown = set(room) - {"web_url", "sip_uri"}
                if unknown:
                    raise ValueError(f"video.static room {key!r}: unknown option(s) {', '.join(sorted(unknown))}")
                room = VirtualRoom(web_url=room.get("web_url") or None, sip_uri=room.get("sip_uri") or None)
            if room.web_url is None and room.sip_uri is None:
                raise ValueError(f"video.static room {key!r} needs web_url or sip_uri")
            self._rooms[str(key)] = room

    def _room_for(self, meeting: MeetingInfo) -> tuple[str, VirtualRoom]:
        for key in (meeting.room_key, meeting.forum_id):
            if key is not None and key in self._rooms:
                return key, self._rooms[key]
        if meeting.room_video_endpoint:
            return meeting.room_video_endpoint, VirtualRoom(sip_uri=meeting.room_video_endpoint)
        raise VideoRejected(
            f"no virtual room is configured for forum {meeting.forum_id!r} and the host room has no video endpoint")

    async def create(self, meeting: MeetingInfo) -> ConferenceInfo:
        """The meeting's permanent room (nothing to create, so always the same answer)."""
        key, room = self._room_for(meeting)
        return ConferenceInfo(provider=self.name, provider_ref=key, host_url=room.web_url, sip_uri=room.sip_uri)

    async def update(self, meeting: MeetingInfo, conference: ConferenceInfo) -> ConferenceInfo:
        """The room as configured now (a changed host room or configuration shows here)."""
        return await self.create(meeting)

    async def end(self, meeting: MeetingInfo, conference: ConferenceInfo) -> None:
        """Nothing to end: the room is permanent."""

    def personal_url(self, meeting: MeetingInfo, conference: ConferenceInfo, participant: Participant,
                     now: datetime) -> str:
        """The room's web link, the same for every participant (no per-person token exists)."""
        if conference.provider != self.name:
            raise VideoRejected(f"conference of provider {conference.provider!r} handed to {self.name!r}")
        if not conference.host_url:
            raise VideoRejected(
                f"the virtual room {conference.provider_ref!r} has no web link; it is reached by SIP only")
        return conference.host_url

    def parse_webhook(self, request: WebhookRequest) -> list[PresenceEvent]:
        """No webhooks exist for a static room: every call is refused as unauthenticated."""
        raise VideoAuthError("the static provider accepts no webhooks")

    async def close(self) -> None:
        """Nothing to release."""
