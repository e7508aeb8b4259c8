"""What the secretariat sees of calendar sync: calendars, their jobs, and clashes."""
from __future__ import annotations

from sqlalchemy import func, select

from schemas import api
from service.calendar.plan import push_key
from service.db import models as m
from service.db.engine import Database
from service.usecases.base import Actor, UnitOfWork, fetch_page

UNFINISHED = ("pending", "running", "failed")


class CalendarStatus:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def calendars(self) -> api.CalendarList:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            s = uow.session
            forums = {r.calendar_url: r.name for r in await s.scalars(select(m.Forum).where(m.Forum.calendar_url.is_not(None)))}
            rooms = {r.calendar_url: r.name for r in await s.scalars(select(m.Room).where(m.Room.calendar_url.is_not(None)))}
            owners = {**rooms, **forums}
            rows = (await s.scalars(select(m.Calendar).order_by(m.Calendar.purpose, m.Calendar.url))).all()
            items = []
            for cal in rows:
                prefix = push_key(cal.url, "").rstrip(":") + ":"
                jobs = (await s.scalars(
                    select(m.OutboxJob).where(m.OutboxJob.key.startswith(prefix, autoescape=True), m.OutboxJob.status.in_(UNFINISHED))
                    .order_by(m.OutboxJob.created_at).limit(100))).all()
                if cal.url not in owners and not jobs:
                    continue  # a calendar no forum or room uses any more, with nothing left to do
                objects = await s.scalar(select(func.count()).select_from(m.CalendarObject)
                                         .where(m.CalendarObject.calendar_id == cal.id))
                blocks = await s.scalar(select(func.count()).select_from(m.RoomBooking)
                                        .where(m.RoomBooking.calendar_id == cal.id, m.RoomBooking.active.is_(True)))
                items.append(api.CalendarOut(
                    id=cal.id, url=cal.url, purpose=cal.purpose, owner_id=cal.owner_id, owner=owners.get(cal.url),
                    last_sync_at=cal.last_sync_at, sync_token_kept=cal.sync_token is not None, last_error=cal.last_error,
                    objects=objects or 0, busy_blocks=blocks or 0,
                    pending_jobs=sum(j.status != "failed" for j in jobs), failed_jobs=sum(j.status == "failed" for j in jobs),
                    jobs=[api.JobOut(id=j.id, kind=j.kind, meeting_id=j.payload.get("meeting_id"), status=j.status,
                                     attempts=j.attempts, next_attempt_at=j.next_attempt_at, last_error=j.last_error)
                          for j in jobs],
                ))
            return api.CalendarList(items=items)

    async def conflicts(self, q: api.ConflictQuery) -> tuple[list[api.ConflictOut], str | None]:
        stmt = select(m.Conflict)
        if q.status == "open":
            stmt = stmt.where(m.Conflict.resolved_at.is_(None))
        elif q.status == "resolved":
            stmt = stmt.where(m.Conflict.resolved_at.is_not(None))
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            rows, nxt = await fetch_page(uow.session, stmt, m.Conflict.created_at, m.Conflict.id, q.limit, q.cursor,
                                         key_is_time=True)
            urls = {c.id: c.url for c in await uow.session.scalars(
                select(m.Calendar).where(m.Calendar.id.in_({r.calendar_id for r in rows if r.calendar_id})))}
            return [api.ConflictOut(
                id=r.id, kind=r.kind, room_id=r.room_id, meeting_id=r.meeting_id, calendar_url=urls.get(r.calendar_id),
                external_uid=r.external_uid, detail=r.detail, status="resolved" if r.resolved_at else "open",
                created_at=r.created_at, resolved_at=r.resolved_at) for r in rows], nxt


