"""Turn stored rows into the API's bodies, times in the meeting's zone."""
from __future__ import annotations

import uuid

from schemas import api
from service.db import models as m
from service.timeutil import local


def site(row: m.Site) -> api.SiteOut:
    return api.SiteOut.model_validate(row)


def _feed(base: str | None, kind: str, token: str | None) -> str | None:
    return f"{base}/feeds/{kind}/{token}.ics" if base and token else None


def room(row: m.Room, feed_base: str | None = None) -> api.RoomOut:
    out = api.RoomOut.model_validate(row)
    out.feed_url = _feed(feed_base, "rooms", row.feed_token)
    return out


def person(row: m.Person) -> api.PersonOut:
    return api.PersonOut.model_validate(row)


def forum(row: m.Forum, feed_base: str | None = None) -> api.ForumOut:
    out = api.ForumOut.model_validate(row)
    out.feed_url = _feed(feed_base, "forums", row.feed_token)
    return out


def session(row: m.Session, zone: str) -> api.SessionOut:
    return api.SessionOut(
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        meeting_id=row.meeting_id,
        title=row.title,
        topic=row.topic,
        starts_at=local(row.starts_at, zone),
        ends_at=local(row.ends_at, zone),
        timezone=zone,
    )


def meeting(row: m.Meeting) -> api.MeetingOut:
    zone = row.timezone
    conf = row.conference
    return api.MeetingOut(
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        forum_id=row.forum_id,
        title=row.title,
        description=row.description,
        starts_at=local(row.starts_at, zone),
        ends_at=local(row.ends_at, zone),
        timezone=zone,
        room_ids=[uuid.UUID(r) for r in row.room_ids],
        conference=(
            api.ConferenceOut(provider=conf.provider, status=conf.status, host_url=conf.host_url, sip_uri=conf.sip_uri)
            if conf is not None
            else None
        ),
        sessions=[session(s, zone) for s in sorted(row.sessions, key=lambda s: (s.starts_at, s.id))],
        status=row.status,  # type: ignore[arg-type]
        uid=row.uid,
        sequence=row.sequence,
    )


def invitation(row: m.Invitation, all_sessions: list[uuid.UUID], join_url: str | None = None) -> api.InvitationOut:
    expected = all_sessions if row.session_ids is None else [uuid.UUID(s) for s in row.session_ids]
    return api.InvitationOut(
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        meeting_id=row.meeting_id,
        person_id=row.person_id,
        mode=row.mode,  # type: ignore[arg-type]
        site_id=row.site_id,
        session_ids=expected,
        rsvp=row.rsvp,  # type: ignore[arg-type]
        join_url=join_url,
    )


def audit(row: m.AuditEntry) -> api.AuditOut:
    return api.AuditOut.model_validate(row)
