"""Reading the audit log."""
from __future__ import annotations

from sqlalchemy import select

from schemas import api
from service.db import models as m
from service.db.engine import Database
from service.usecases import views
from service.usecases.base import Actor, UnitOfWork, fetch_page


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def list(self, q: api.AuditQuery) -> tuple[list[api.AuditOut], str | None]:
        stmt = select(m.AuditEntry)
        if q.entity:
            stmt = stmt.where(m.AuditEntry.entity == q.entity)
        if q.entity_id:
            stmt = stmt.where(m.AuditEntry.entity_id == q.entity_id)
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            rows, nxt = await fetch_page(uow.session, stmt, m.AuditEntry.at, m.AuditEntry.id, q.limit, q.cursor, key_is_time=True)
            return [views.audit(r) for r in rows], nxt
