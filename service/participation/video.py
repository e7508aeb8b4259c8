"""The service's side of the video connectors: which providers are configured, conferences, personal URLs."""
from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select

from connectors.video import (
    ConferenceInfo,
    MeetingInfo,
    Participant,
    PresenceEvent,
    VideoAuthError,
    VideoError,
    VideoProvider,
    VideoRejected,
    VideoUnavailable,
    WebhookRequest,
    make_provider,
)
from service.calendar.plan import plan_meeting
from service.calendar.snapshot import conference_shown
from service.db import models as m
from service.db.engine import Database
from service.errors import Invalid
from service.participation.errors import NoVideo
from service.outbox import GiveUp, Job, RetryLater
from service.settings import Settings, SettingsError
from service.timeutil import now
from service.usecases.base import Actor, UnitOfWork

log = logging.getLogger("forumbridge.video")
CONFERENCE = "video.conference"


def conference_job(meeting_id: uuid.UUID) -> Job:
    """The job that makes a meeting's conference match the database."""
    return CONFERENCE, {"meeting_id": str(meeting_id)}, f"conference:{meeting_id}"


def room_key(meeting_id: uuid.UUID) -> str:
    """The meeting's conference name for good (providers derive their room from it)."""
    return f"forum-{meeting_id.hex[:20]}"


def meeting_info(meeting: m.Meeting, host_endpoint: str | None = None) -> MeetingInfo:
    return MeetingInfo(
        meeting_id=str(meeting.id), title=meeting.title, starts_at=meeting.starts_at, ends_at=meeting.ends_at,
        room_key=room_key(meeting.id), forum_id=str(meeting.forum_id), room_video_endpoint=host_endpoint)


def conference_info(conf: m.Conference) -> ConferenceInfo:
    return ConferenceInfo(provider=conf.provider, provider_ref=conf.provider_ref, host_url=conf.host_url,
                          sip_uri=conf.sip_uri, dial_in=conf.dial_in)


class VideoGateway:
    """The configured providers ([video.NAME] sections), by short name."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.providers: dict[str, VideoProvider] = {}
        for name, config in settings.video.items():
            options = dict(config)
            if name != "static":
                # A video link works as long as the join link that leads to it, unless configured otherwise.
                options.setdefault("grace_minutes", settings.join.grace_minutes)
                if name == "jitsi":
                    options.setdefault("early_minutes", settings.join.early_minutes)
            try:
                self.providers[name] = make_provider(name, options)
            except ValueError as exc:
                raise SettingsError(f"invalid configuration:\n  option video.{name}: {exc}") from None

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()

    def names(self) -> list[str]:
        return sorted(self.providers)

    def reporting_presence(self) -> set[str]:
        return {name for name, p in self.providers.items() if p.reports_presence}

    def check(self, name: str) -> None:
        if name not in self.providers:
            known = ", ".join(self.names()) or "none"
            raise Invalid("conference.provider", f"{name!r} is not configured here (configured: {known})")

    def personal_url(self, meeting: MeetingInfo, conference: ConferenceInfo, status: str, who: Participant) -> str:
        """`who`'s URL into the meeting's conference (`status` is the stored conference's), made now."""
        provider = self.providers.get(conference.provider)
        if provider is None or status != "active":
            raise NoVideo("the video conference is not ready yet; try again in a minute")
        try:
            return provider.personal_url(meeting, conference, who, now())
        except VideoError as exc:
            raise NoVideo(f"no personal video link can be made: {exc}") from exc

    def parse_webhook(self, name: str, request: WebhookRequest) -> list[PresenceEvent]:
        provider = self.providers.get(name)
        if provider is None:
            raise VideoRejected(f"no provider {name!r} is configured")
        return provider.parse_webhook(request)

    async def converge(self, payload: dict[str, Any]) -> None:
        """Outbox job: the provider's conference matches the meeting (created, updated or ended)."""
        meeting_id = uuid.UUID(payload["meeting_id"])
        async with self.db.session(write=False) as s:
            meeting = await s.get(m.Meeting, meeting_id)
            if meeting is None or meeting.conference is None:
                return
            conf = meeting.conference
            host = None
            if meeting.room_ids:
                host = await s.scalar(select(m.Room.video_endpoint).where(m.Room.id == uuid.UUID(meeting.room_ids[0])))
            info, current = meeting_info(meeting, host), conference_info(conf)
            provider = self.providers.get(conf.provider)
            planned = meeting.status == "planned"
        if provider is None:
            raise GiveUp(f"video provider {current.provider!r} is not configured")
        try:
            if not planned:
                if current.provider_ref:
                    await provider.end(info, current)
                result, status = current, "ended"
            elif current.provider_ref:
                result, status = await provider.update(info, current), "active"
            else:
                result, status = await provider.create(info), "active"
        except VideoUnavailable as exc:
            raise RetryLater(f"video provider unavailable: {exc}") from exc
        except VideoAuthError as exc:
            raise RetryLater(f"video provider refused our credentials: {exc}") from exc
        except VideoRejected as exc:
            raise GiveUp(f"video provider refused the request: {exc}") from exc
        async with UnitOfWork(self.db, Actor(f"video:{current.provider}"), write=True) as uow:
            row = await uow.session.scalar(select(m.Conference).where(m.Conference.meeting_id == meeting_id))
            if row is not None and row.provider == current.provider:
                shown = conference_shown(row)
                row.provider_ref, row.host_url = result.provider_ref, result.host_url
                row.sip_uri, row.dial_in, row.status = result.sip_uri, result.dial_in, status
                if conference_shown(row) != shown:
                    # The shared calendar copies show the conference (URL, CONFERENCE, its SIP
                    # address): a conference that came up, moved or ended is pushed to them.
                    meeting = await uow.session.get(m.Meeting, meeting_id)
                    if meeting is not None:
                        await plan_meeting(uow.session, meeting)
                await uow.commit()
