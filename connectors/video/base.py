"""The video provider port: what the service may ask of a video system, and what it gets back."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from connectors.video.errors import VideoAuthError, VideoError, VideoRejected, VideoUnavailable

__all__ = [
    "MeetingInfo", "ConferenceInfo", "Participant", "PresenceEvent", "PresenceKind", "WebhookRequest",
    "VideoProvider", "VideoError", "VideoAuthError", "VideoUnavailable", "VideoRejected",
]

PresenceKind = Literal["joined", "left"]


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{name} must be an aware datetime, got {value!r}")


@dataclass(frozen=True)
class MeetingInfo:
    """The meeting as a provider needs to see it.

    `room_key` names the meeting's conference for good: derived from the meeting id, never from
    the title or the time, so a renamed or moved meeting keeps its room and a retried `create`
    finds the conference it made before. `room_video_endpoint` is the SIP (or H.323) URI of the
    host room's video system, if it has one; `forum_id` the forum the meeting belongs to.
    """

    meeting_id: str
    title: str
    starts_at: datetime
    ends_at: datetime
    room_key: str
    forum_id: str | None = None
    room_video_endpoint: str | None = None

    def __post_init__(self) -> None:
        _require_aware("starts_at", self.starts_at)
        _require_aware("ends_at", self.ends_at)
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if not self.room_key:
            raise ValueError("room_key must not be empty")


@dataclass(frozen=True)
class ConferenceInfo:
    """A conference as the provider made it: what the service stores and hands back later.

    `provider_ref` is the provider's own handle (a room name, a meeting id with its creation
    time); only the provider that made it interprets it. `host_url` is the general link to the
    conference where the provider has one that any reader may see (never a personal token);
    `sip_uri` what room systems dial; `dial_in` a phone number and PIN as text.
    """

    provider: str
    provider_ref: str
    host_url: str | None = None
    sip_uri: str | None = None
    dial_in: str | None = None


@dataclass(frozen=True)
class Participant:
    """Someone who gets a personal URL; `invitation_id` comes back in that person's presence events."""

    invitation_id: str
    name: str
    email: str
    moderator: bool = False


@dataclass(frozen=True)
class PresenceEvent:
    """One participant joined or left, as a provider reported it.

    `dedup_key` is the same for every delivery of one event (providers retry webhooks) and
    different for different events, so the service can record each event exactly once; it is at
    most 255 characters. `source` is the provider's short name.
    """

    invitation_id: str
    kind: PresenceKind
    at: datetime
    dedup_key: str
    source: str

    def __post_init__(self) -> None:
        _require_aware("at", self.at)
        if self.kind not in ("joined", "left"):
            raise ValueError(f"kind must be 'joined' or 'left', got {self.kind!r}")


@dataclass(frozen=True)
class WebhookRequest:
    """A webhook call exactly as it arrived.

    `path` is the part after ``/webhooks/{provider}`` (``""`` or starting with ``/``), `headers`
    the request headers (looked up without regard to case), `body` the raw bytes (signatures are
    over them, so never a re-encoded copy), `url` the full URL as the provider called it, query
    string included (BigBlueButton signs it).
    """

    path: str
    headers: Mapping[str, str]
    body: bytes
    url: str = ""


@runtime_checkable
class VideoProvider(Protocol):
    """Makes and ends conferences, gives personal join URLs and turns webhooks into presence events.

    Every method raises only the `VideoError` family: `VideoAuthError` (our credentials were
    refused, or a webhook's signature is missing or wrong), `VideoUnavailable` (retry later) and
    `VideoRejected` (the request cannot succeed as it is). No library or HTTP exception leaves a
    provider.
    """

    #: The short name used in configuration, in `ConferenceInfo.provider` and `PresenceEvent.source`.
    name: str
    #: True when the provider sends joined/left webhooks; False when attendance can only come from
    #: link opens (the service then counts a link open as present until the meeting ends).
    reports_presence: bool

    async def create(self, meeting: MeetingInfo) -> ConferenceInfo:
        """Make the meeting's conference, or find the one made before: idempotent by `room_key`.

        Calling it again for the same meeting (a retried outbox job) returns an equivalent
        `ConferenceInfo` and never makes a second conference. Raises `VideoUnavailable`,
        `VideoAuthError` (our credentials refused) or `VideoRejected`.
        """
        ...

    async def update(self, meeting: MeetingInfo, conference: ConferenceInfo) -> ConferenceInfo:
        """Bring the conference in line with the changed meeting (title, times) and return what to
        store from now on; it may differ from `conference` (the provider re-made a lost meeting).
        Idempotent. Raises like `create`."""
        ...

    async def end(self, meeting: MeetingInfo, conference: ConferenceInfo) -> None:
        """End the conference (the meeting was cancelled or is over). A conference that is
        already gone counts as ended. Idempotent. Raises `VideoUnavailable` or `VideoAuthError`."""
        ...

    def personal_url(self, meeting: MeetingInfo, conference: ConferenceInfo, participant: Participant,
                     now: datetime) -> str:
        """The participant's own join URL, made at `now` (aware). No I/O.

        Where the provider can bind a URL to a person and a time, it works from shortly before
        the meeting starts until `meeting.ends_at + grace`, for this meeting only, and the
        provider's presence events for it carry `participant.invitation_id`. Raises
        `VideoRejected` when `conference` is not this provider's or the provider cannot make a
        URL for it.
        """
        ...

    def parse_webhook(self, request: WebhookRequest) -> list[PresenceEvent]:
        """Verify a webhook and turn it into presence events. No I/O.

        Raises `VideoAuthError` when the signature or token is missing or wrong (before reading
        anything else), `VideoRejected` when the body is malformed. Events the service does not
        need (room created, chat, ...) and participants who did not come through a personal URL
        give ``[]``.
        """
        ...

    async def close(self) -> None:
        """Release HTTP connections. The provider must not be used afterwards."""
        ...
