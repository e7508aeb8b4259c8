"""ICS subscription feeds for clients without CalDAV: one per forum, one per room."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from service.calendar.ical import render_feed
from service.calendar.snapshot import build_events
from service.db import models as m
from service.db.engine import Database
from service.errors import NotFound
from service.settings import Settings
from service.timeutil import now

TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
# Old meetings drop out of feeds so that they stay small.
HISTORY = timedelta(days=180)


@dataclass(frozen=True)
class Feed:
    body: bytes
    etag: str


class Feeds:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def forum(self, token: str) -> Feed:
        async with self.db.session(write=False) as s:
            forum = await s.scalar(select(m.Forum).where(m.Forum.feed_token == _checked(token)))
            if forum is None:
                raise NotFound("no such feed")
            meetings = await s.scalars(select(m.Meeting).where(
                m.Meeting.forum_id == forum.id, m.Meeting.ends_at > now() - HISTORY).order_by(m.Meeting.starts_at))
            events = await build_events(s, list(meetings), self.settings)
            return _feed(render_feed(events, forum.name))

    async def room(self, token: str) -> Feed:
        async with self.db.session(write=False) as s:
            room = await s.scalar(select(m.Room).where(m.Room.feed_token == _checked(token)))
            if room is None:
                raise NotFound("no such feed")
            booked = select(m.RoomBooking.meeting_id).where(
                m.RoomBooking.room_id == room.id, m.RoomBooking.active.is_(True), m.RoomBooking.meeting_id.is_not(None))
            meetings = await s.scalars(select(m.Meeting).where(
                m.Meeting.id.in_(booked), m.Meeting.ends_at > now() - HISTORY).order_by(m.Meeting.starts_at))
            events = await build_events(s, list(meetings), self.settings)
            return _feed(render_feed(events, room.name))


def _checked(token: str) -> str:
    if not TOKEN.match(token):
        raise NotFound("no such feed")
    return token


def _feed(body: bytes) -> Feed:
    return Feed(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
