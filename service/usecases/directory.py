"""Sites, rooms, people and forums: the things meetings are made of."""
from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.calendar.plan import attach_calendar, meetings_to_come, push_jobs
from service.mailing import invitation_mail_job, invitee_mail_jobs
from service.outbox import enqueue_many
from service.participation.video import conference_job
from service.db import models as m
from service.db.engine import Database
from service.errors import Conflict, Invalid, NotFound
from service.usecases import views
from service.usecases.base import Actor, UnitOfWork, fetch_page

Row = TypeVar("Row", bound=m.Base)
Out = TypeVar("Out", bound=BaseModel)

Check = Callable[[AsyncSession, dict[str, Any], "Row | None"], Awaitable[None]]
# After a create or change: (session, row, the values it had before, or None when new).
Saved = Callable[[AsyncSession, Any, "dict[str, Any] | None"], Awaitable[None]]


@dataclass
class Catalogue(Generic[Row, Out]):
    """Create, read, list, change and delete one kind of directory entry, audited."""

    db: Database
    model: type[Row]
    entity: str
    # (row, whether the reader may see its secrets, e.g. a feed URL) -> body
    view: Callable[[Row, bool], Out]
    check: Check | None = None
    saved: Saved | None = None
    # Columns filled on create (e.g. a random feed token).
    defaults: Callable[[], dict[str, Any]] | None = None
    # (model, column, label): rows that refer to an entry and keep it from being deleted.
    referrers: tuple[tuple[type, Any, str], ...] = ()

    async def get(self, actor: Actor, ident: uuid.UUID) -> Out:
        async with UnitOfWork(self.db, actor, write=False) as uow:
            return self.view(await self._load(uow.session, ident), _trusted(actor))

    async def list(self, actor: Actor, limit: int, cursor: str | None) -> tuple[list[Out], str | None]:
        async with UnitOfWork(self.db, actor, write=False) as uow:
            rows, nxt = await fetch_page(
                uow.session, select(self.model), self.model.created_at, self.model.id, limit, cursor, key_is_time=True
            )
            return [self.view(r, _trusted(actor)) for r in rows], nxt

    async def create(self, actor: Actor, data: dict[str, Any]) -> Out:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            if self.check:
                await self.check(uow.session, data, None)
            row = self.model(**data, **(self.defaults() if self.defaults else {}))
            uow.session.add(row)
            await uow.session.flush()
            if self.saved:
                await self.saved(uow.session, row, None)
            uow.audit("created", self.entity, row.id, data)
            await uow.commit()
            return self.view(row, _trusted(actor))

    async def update(self, actor: Actor, ident: uuid.UUID, changes: dict[str, Any]) -> Out:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row = await self._load(uow.session, ident)
            if self.check:
                await self.check(uow.session, changes, row)
            changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
            before = {k: getattr(row, k) for k in changed}
            for key, value in changed.items():
                setattr(row, key, value)
            if changed:
                await uow.session.flush()
                if self.saved:
                    await self.saved(uow.session, row, before)
                uow.audit("updated", self.entity, row.id, {k: v for k, v in changed.items() if k != "email_key"})
            await uow.commit()
            return self.view(row, _trusted(actor))

    async def rotate_feed(self, actor: Actor, ident: uuid.UUID) -> Out:
        """Replace the feed token: the old feed URL stops working."""
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row = await self._load(uow.session, ident)
            row.feed_token = new_feed_token()
            uow.audit("feed_rotated", self.entity, row.id, {})
            await uow.commit()
            return self.view(row, _trusted(actor))

    async def delete(self, actor: Actor, ident: uuid.UUID) -> None:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row = await self._load(uow.session, ident)
            for model, column, label in self.referrers:
                if await uow.session.scalar(select(exists().where(column == ident))):
                    raise Conflict(f"the {self.entity} is still used by {label}; remove those first")
            await uow.session.delete(row)
            uow.audit("deleted", self.entity, ident, {"name": getattr(row, "name", None)})
            await uow.commit()

    async def _load(self, session: AsyncSession, ident: uuid.UUID) -> Row:
        row = await session.get(self.model, ident)
        if row is None:
            raise NotFound(f"no {self.entity} with id {ident}")
        return row


def _trusted(actor: Actor) -> bool:
    return "secretariat" in actor.roles


def new_feed_token() -> str:
    return secrets.token_urlsafe(32)


def _feed_defaults() -> dict[str, Any]:
    return {"feed_token": new_feed_token()}


def _calendar_hook(purpose: str) -> Saved:
    async def saved(session: AsyncSession, row: Any, before: dict[str, Any] | None) -> None:
        previous = before.get("calendar_url") if before else None
        if before is None and row.calendar_url is None:
            return
        if before is not None and "calendar_url" not in before:
            return
        await attach_calendar(session, row.calendar_url, purpose, row.id, previous)

    return saved


# What calendar copies of a meeting show of its rooms, their sites and its invited people
# (LOCATION, the rooms' and attendees' ATTENDEE lines, the host room's video address).
_SHOWN = {"site": {"name", "city"}, "room": {"name", "site_id", "video_endpoint"}, "person": {"name", "email"}}


def _shown_hook(entity: str, then: Saved | None = None) -> Saved:
    """After a change of what the calendars and the invitations show of a site, room or person: push
    the meetings to come that show it, and mail what changed to whom it concerns (a mail job sends
    nothing when the copy it would send was sent already)."""
    async def saved(session: AsyncSession, row: Any, before: dict[str, Any] | None) -> None:
        if then is not None:
            await then(session, row, before)
        if before is None or not _SHOWN[entity] & before.keys():
            return
        if entity == "person":
            meetings = select(m.Invitation.meeting_id).where(m.Invitation.person_id == row.id)
        else:
            rooms = [row.id] if entity == "room" else select(m.Room.id).where(m.Room.site_id == row.id)
            meetings = select(m.RoomBooking.meeting_id).where(
                m.RoomBooking.room_id.in_(rooms), m.RoomBooking.meeting_id.is_not(None))
        shown = await meetings_to_come(session, meetings)
        if not shown:
            return
        jobs = await push_jobs(session, [(mt, (), None) for mt in shown])
        planned = [mt.id for mt in shown if mt.status == "planned"]
        if entity == "person":
            # Their own invitations only: a new address needs its copy, the others' copies
            # naming them can wait for the meeting's next change.
            invitations = await session.scalars(select(m.Invitation.id).where(
                m.Invitation.person_id == row.id, m.Invitation.meeting_id.in_(planned)).order_by(m.Invitation.id))
            jobs += [invitation_mail_job(inv) for inv in invitations]
        elif planned:
            jobs += await invitee_mail_jobs(session, planned)
        if entity == "room" and "video_endpoint" in before:
            # A conference whose provider dials the host room (the static provider's SIP
            # address) follows the room's new address.
            jobs += [conference_job(mt.id) for mt in shown
                     if mt.conference is not None and mt.room_ids and mt.room_ids[0] == str(row.id)]
        await enqueue_many(session, jobs)

    return saved


async def _check_room(session: AsyncSession, data: dict[str, Any], _row: m.Room | None) -> None:
    site_id = data.get("site_id")
    if site_id is not None and await session.get(m.Site, site_id) is None:
        raise Invalid("site_id", f"no site with id {site_id}")


async def _check_person(session: AsyncSession, data: dict[str, Any], row: m.Person | None) -> None:
    if data.get("email") is None:
        return
    key = data["email"].strip().lower()
    if len(key) > 320:  # lower() may lengthen: "İ" becomes two characters
        raise Invalid("email", "too long once in lower case (at most 320 characters)")
    data["email_key"] = key
    clash = await session.scalar(select(m.Person.id).where(m.Person.email_key == key))
    if clash is not None and (row is None or clash != row.id):
        raise Conflict(f"email: {data['email']} belongs to another person ({clash})", field="email")


@dataclass
class Directory:
    sites: Catalogue[m.Site, Any]
    rooms: Catalogue[m.Room, Any]
    people: Catalogue[m.Person, Any]
    forums: Catalogue[m.Forum, Any]


def make_directory(db: Database, public_url: str) -> Directory:
    base = public_url.rstrip("/")
    return Directory(
        sites=Catalogue(db, m.Site, "site", lambda r, _t: views.site(r), saved=_shown_hook("site"), referrers=(
            (m.Room, m.Room.site_id, "rooms"), (m.Invitation, m.Invitation.site_id, "invitations"))),
        rooms=Catalogue(db, m.Room, "room", lambda r, t: views.room(r, base if t else None), _check_room,
                        saved=_shown_hook("room", _calendar_hook("room")), defaults=_feed_defaults,
                        referrers=((m.RoomBooking, m.RoomBooking.room_id, "bookings"),)),
        people=Catalogue(db, m.Person, "person", lambda r, _t: views.person(r), _check_person,
                         saved=_shown_hook("person"), referrers=(
            (m.Invitation, m.Invitation.person_id, "invitations"),)),
        forums=Catalogue(db, m.Forum, "forum", lambda r, t: views.forum(r, base if t else None),
                         saved=_calendar_hook("forum"), defaults=_feed_defaults,
                         referrers=((m.Meeting, m.Meeting.forum_id, "meetings"),)),
    )


