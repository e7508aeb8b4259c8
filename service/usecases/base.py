"""Unit of work, the acting user, and keyset paging shared by the use-cases."""
from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Sequence

from sqlalchemy import Select, and_, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import Database, is_unavailable, sqlstate
from service.db.models import AuditEntry
from service.errors import Conflict, Invalid, Unavailable


@dataclass(frozen=True)
class Actor:
    """Who is acting: the token's `sub`, or a system component."""

    sub: str
    roles: frozenset[str] = frozenset()


SYSTEM = Actor("system", frozenset({"secretariat"}))


class UnitOfWork:
    """One transaction: rolled back unless `commit` was called.

    A lost database connection surfaces as `Unavailable` (503), so clients
    retry instead of seeing a 500.
    """

    def __init__(self, db: Database, actor: Actor, *, write: bool) -> None:
        self.db = db
        self.actor = actor
        self.write = write
        self.session: AsyncSession = db.session(write)
        self._committed = False

    async def __aenter__(self) -> "UnitOfWork":
        try:
            await self.session.begin()
        except Exception as exc:
            await self.session.close()
            if is_unavailable(exc):
                raise Unavailable("the database cannot be reached; try again shortly") from exc
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if not self._committed:
                await self.session.rollback()
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        finally:
            await self.session.close()
        # The connection is taken at the first statement, so a refused connect lands here too.
        if exc is not None and is_unavailable(exc):
            raise Unavailable("the database connection was lost; try again shortly") from exc
        if isinstance(exc, IntegrityError) and (conflict := raced(exc)) is not None:
            raise conflict from exc

    async def commit(self) -> None:
        wrote_jobs = self.session.info.pop("outbox_written", False)
        await self.session.commit()
        self._committed = True
        if wrote_jobs:
            self.db.jobs_written()

    def audit(self, action: str, entity: str, entity_id: Any, details: dict[str, Any] | None = None) -> None:
        """Record a change, in the same transaction as the change."""
        self.session.add(
            AuditEntry(
                actor=self.actor.sub,
                action=action,
                entity=entity,
                entity_id=str(entity_id) if entity_id is not None else None,
                details=_jsonable(details or {}),
            )
        )


# Unique and foreign keys that a write checks first and another request can still beat to it
# (PostgreSQL under READ COMMITTED: both pass the check, the database refuses the second), by the
# field the request names.
_RACED_FIELDS = {
    "uq_people_email_key": "email",
    "uq_invitations_meeting_person": "person_id",
    "fk_meetings_forum_id_forums": "forum_id",
    "fk_rooms_site_id_sites": "site_id",
    "fk_invitations_person_id_people": "person_id",
    "fk_invitations_site_id_sites": "site_id",
}
_UNIQUE_OR_FOREIGN = {"23505", "23503"}
_CONSTRAINT = re.compile(r"\b((?:uq|fk|pk)_[a-z0-9_]+)")


def raced(exc: IntegrityError) -> Conflict | None:
    """A unique or foreign key refused by the database, after the use case's own check passed: a
    request committed the same thing, or took away what this one refers to, at the same moment.
    A 409 naming the field when the key is known; None for other refusals (the room's exclusion
    constraint is the booking rules' own race, retried where it happens)."""
    orig = exc.orig
    state = sqlstate(exc)
    text = str(orig)
    if state not in _UNIQUE_OR_FOREIGN and not text.startswith(("UNIQUE constraint failed", "FOREIGN KEY constraint failed")):
        return None
    found = _CONSTRAINT.search(getattr(getattr(orig, "__cause__", None), "constraint_name", None) or text)
    field = _RACED_FIELDS.get(found.group(1)) if found else None
    what = f"{field}: " if field else ""
    return Conflict(f"{what}another request changed the same data at the same moment; read it again and retry",
                    **({"field": field} if field else {}))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


# -- keyset paging -----------------------------------------------------------
def encode_cursor(key: Any, ident: uuid.UUID) -> str:
    raw = json.dumps([key.isoformat() if isinstance(key, datetime) else key, str(ident)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, key_is_time: bool) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if key_is_time:
            key = datetime.fromisoformat(key)
            if key.tzinfo is None:
                raise ValueError
            key.astimezone(timezone.utc)  # as it is bound: a time past year 9999 in UTC overflows
        if not isinstance(ident, str):
            raise TypeError
        return key, uuid.UUID(ident)
    except (ValueError, TypeError, OverflowError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid("cursor", "not a cursor this service gave out") from exc


async def fetch_page(
    session: AsyncSession, stmt: Select, key_col: Any, id_col: Any, limit: int, cursor: str | None, *, key_is_time: bool
) -> tuple[Sequence[Any], str | None]:
    """Rows of `stmt` ordered by (key, id), after `cursor`, and the cursor of the next page."""
    if cursor:
        key, ident = decode_cursor(cursor, key_is_time=key_is_time)
        stmt = stmt.where(or_(key_col > key, and_(key_col == key, id_col > ident)))
    rows = (await session.scalars(stmt.order_by(key_col, id_col).limit(limit + 1))).all()
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, encode_cursor(getattr(last, key_col.key), last.id)
