"""What the secretariat sees of the outbox: every job not yet done, of every kind (mail, calendars, video)."""
from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import or_, select

from schemas import api
from service.db import models as m
from service.db.engine import Database
from service.usecases.base import Actor, UnitOfWork, fetch_page

UNFINISHED = ("pending", "running", "failed")


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


class OutboxStatus:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def jobs(self, q: api.OutboxQuery) -> tuple[list[api.OutboxJobOut], str | None]:
        stmt = select(m.OutboxJob).where(m.OutboxJob.status.in_((q.status,) if q.status else UNFINISHED))
        if q.kind:
            stmt = stmt.where(or_(m.OutboxJob.kind == q.kind, m.OutboxJob.kind.startswith(q.kind + ".", autoescape=True)))
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            rows, nxt = await fetch_page(uow.session, stmt, m.OutboxJob.created_at, m.OutboxJob.id, q.limit, q.cursor,
                                         key_is_time=True)
            return [api.OutboxJobOut(
                id=r.id, kind=r.kind, key=r.key, status=r.status, attempts=r.attempts,
                next_attempt_at=r.next_attempt_at, last_error=r.last_error,
                meeting_id=_uuid((r.payload or {}).get("meeting_id")),
                invitation_id=_uuid((r.payload or {}).get("invitation_id")), created_at=r.created_at) for r in rows], nxt
