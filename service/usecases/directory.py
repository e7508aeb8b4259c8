"""Sites, rooms, people and forums: the things meetings are made of."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import models as m
from service.db.engine import Database
from service.errors import Conflict, Invalid, NotFound
from service.usecases import views
from service.usecases.base import Actor, UnitOfWork, fetch_page

Row = TypeVar("Row", bound=m.Base)
Out = TypeVar("Out", bound=BaseModel)

Check = Callable[[AsyncSession, dict[str, Any], "Row | None"], Awaitable[None]]


@dataclass
class Catalogue(Generic[Row, Out]):
    """Create, read, list, change and delete one kind of directory entry, audited."""

    db: Database
    model: type[Row]
    entity: str
    view: Callable[[Row], Out]
    check: Check | None = None
    # (model, column, label): rows that refer to an entry and keep it from being deleted.
    referrers: tuple[tuple[type, Any, str], ...] = ()

    async def get(self, ident: uuid.UUID) -> Out:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            return self.view(await self._load(uow.session, ident))

    async def list(self, limit: int, cursor: str | None) -> tuple[list[Out], str | None]:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            rows, nxt = await fetch_page(
                uow.session, select(self.model), self.model.created_at, self.model.id, limit, cursor, key_is_time=True
            )
            return [self.view(r) for r in rows], nxt

    async def create(self, actor: Actor, data: dict[str, Any]) -> Out:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            if self.check:
                await self.check(uow.session, data, None)
            row = self.model(**data)
            uow.session.add(row)
            await uow.session.flush()
            uow.audit("created", self.entity, row.id, data)
            await uow.commit()
            return self.view(row)

    async def update(self, actor: Actor, ident: uuid.UUID, changes: dict[str, Any]) -> Out:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row = await self._load(uow.session, ident)
            if self.check:
                await self.check(uow.session, changes, row)
            changed = {k: v for k, v in changes.items() if getattr(row, k) != v}
            for key, value in changed.items():
                setattr(row, key, value)
            if changed:
                await uow.session.flush()
                uow.audit("updated", self.entity, row.id, changed)
            await uow.commit()
            return self.view(row)

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


async def _check_room(session: AsyncSession, data: dict[str, Any], _row: m.Room | None) -> None:
    site_id = data.get("site_id")
    if site_id is not None and await session.get(m.Site, site_id) is None:
        raise Invalid("site_id", f"no site with id {site_id}")


async def _check_person(session: AsyncSession, data: dict[str, Any], row: m.Person | None) -> None:
    if data.get("email") is None:
        return
    key = data["email"].strip().lower()
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


def make_directory(db: Database) -> Directory:
    return Directory(
        sites=Catalogue(db, m.Site, "site", views.site, referrers=(
            (m.Room, m.Room.site_id, "rooms"), (m.Invitation, m.Invitation.site_id, "invitations"))),
        rooms=Catalogue(db, m.Room, "room", views.room, _check_room, referrers=(
            (m.RoomBooking, m.RoomBooking.room_id, "bookings"),)),
        people=Catalogue(db, m.Person, "person", views.person, _check_person, referrers=(
            (m.Invitation, m.Invitation.person_id, "invitations"),)),
        forums=Catalogue(db, m.Forum, "forum", views.forum, referrers=(
            (m.Meeting, m.Meeting.forum_id, "meetings"),)),
    )


