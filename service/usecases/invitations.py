"""Invitations: who is expected at which sessions, from where, and their answer."""
from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from schemas import api
from service.calendar.plan import plan_meeting
from service.db import models as m
from service.db.engine import Database
from service.errors import Conflict, Invalid, NotFound
from service.links import LinkKeys, token_hash
from service.mailing import invitation_mail_job, withdraw_mail
from service.outbox import enqueue
from service.timeutil import now
from service.usecases import views
from service.usecases.base import Actor, UnitOfWork, fetch_page
from service.usecases.meetings import lock_meetings


async def enqueue_mail(session: Any, invitation_id: uuid.UUID) -> None:
    """Queue the person's mail: the invitation, an update, or a cancellation, whichever is due when it runs."""
    await enqueue(session, *invitation_mail_job(invitation_id))


class Invitations:
    def __init__(self, db: Database, links: LinkKeys, early: timedelta = timedelta(minutes=30)) -> None:
        self.db = db
        self.links = links
        # How early before its start a meeting's video opens: attendance from then on counts.
        self.early = early

    def _issue(self, uow: UnitOfWork, row: m.Invitation) -> str:
        token = self.links.token(row.id, row.token_generation)
        uow.session.add(m.JoinToken(invitation_id=row.id, generation=row.token_generation, token_hash=token_hash(token)))
        return self.links.url(token)

    async def reissue(self, actor: Actor, invitation_id: uuid.UUID) -> api.InvitationOut:
        """Revoke the current join link and make a new one; the new URL is in this answer only."""
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row, meeting = await self._load(uow, invitation_id)
            await uow.session.execute(update(m.JoinToken).where(
                m.JoinToken.invitation_id == row.id, m.JoinToken.revoked_at.is_(None)).values(revoked_at=now()))
            row.token_generation += 1
            url = self._issue(uow, row)
            await enqueue_mail(uow.session, row.id)
            uow.audit("link_reissued", "invitation", row.id, {"generation": row.token_generation})
            await uow.commit()
            return views.invitation(row, self._all(meeting), join_url=url)

    async def create(self, actor: Actor, meeting_id: uuid.UUID, body: api.InvitationCreate) -> api.InvitationOut:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            s = uow.session
            # Locked (PostgreSQL) and read afresh with its sessions, as every write of the meeting
            # does: a session deleted meanwhile is either gone here or not yet deleted, and then its
            # deletion prunes this invitation too.
            meeting = (await lock_meetings(s, [meeting_id])).get(meeting_id)
            if meeting is None:
                raise NotFound(f"no meeting with id {meeting_id}")
            if await s.get(m.Person, body.person_id) is None:
                raise Invalid("person_id", f"no person with id {body.person_id}")
            await self._check_site(uow, body.site_id)
            sessions = self._check_sessions(meeting, body.session_ids)
            clash = await s.scalar(
                select(m.Invitation.id).where(
                    m.Invitation.meeting_id == meeting_id, m.Invitation.person_id == body.person_id
                )
            )
            if clash is not None:
                raise Conflict(f"person_id: the person is already invited ({clash})", field="person_id")
            row = m.Invitation(
                meeting_id=meeting_id,
                person_id=body.person_id,
                mode=body.mode,
                site_id=body.site_id,
                session_ids=sessions,
                rsvp="needs-action",
                token_generation=1,
            )
            s.add(row)
            await s.flush()
            url = self._issue(uow, row)
            await plan_meeting(s, meeting)
            await enqueue_mail(s, row.id)
            uow.audit("invited", "invitation", row.id, {
                "meeting_id": meeting_id, "person_id": body.person_id, "mode": body.mode, "session_ids": sessions})
            await uow.commit()
            return views.invitation(row, self._all(meeting), join_url=url)

    async def list(self, meeting_id: uuid.UUID, limit: int, cursor: str | None) -> tuple[list[api.InvitationOut], str | None]:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            meeting = await uow.session.get(m.Meeting, meeting_id)
            if meeting is None:
                raise NotFound(f"no meeting with id {meeting_id}")
            rows, nxt = await fetch_page(
                uow.session,
                select(m.Invitation).where(m.Invitation.meeting_id == meeting_id),
                m.Invitation.created_at,
                m.Invitation.id,
                limit,
                cursor,
                key_is_time=True,
            )
            every = self._all(meeting)
            return [views.invitation(r, every) for r in rows], nxt

    async def get(self, invitation_id: uuid.UUID) -> api.InvitationOut:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            row, meeting = await self._load(uow, invitation_id, lock=False)
            return views.invitation(row, self._all(meeting))

    async def update(self, actor: Actor, invitation_id: uuid.UUID, patch: api.InvitationPatch) -> api.InvitationOut:
        given = patch.model_fields_set
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row, meeting = await self._load(uow, invitation_id)
            changes: dict[str, Any] = {}
            for name in ("mode", "rsvp"):
                if name in given:
                    if getattr(patch, name) is None:
                        raise Invalid(name, "may not be null")
                    changes[name] = getattr(patch, name)
            if "site_id" in given:
                await self._check_site(uow, patch.site_id)
                changes["site_id"] = patch.site_id
            if "session_ids" in given:
                changes["session_ids"] = self._check_sessions(meeting, patch.session_ids)
            mode = changes.get("mode", row.mode)
            if mode == "in_room" and changes.get("site_id", row.site_id) is None:
                raise Invalid("site_id", "required when mode is in_room")
            changes = {k: v for k, v in changes.items() if getattr(row, k) != v}
            if changes:
                for name, value in changes.items():
                    setattr(row, name, value)
                await plan_meeting(uow.session, meeting)
                if changes.keys() - {"rsvp"}:
                    await enqueue_mail(uow.session, row.id)
                uow.audit("updated", "invitation", row.id, changes)
                await uow.commit()
            return views.invitation(row, self._all(meeting))

    async def delete(self, actor: Actor, invitation_id: uuid.UUID) -> None:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            row, meeting = await self._load(uow, invitation_id, lock=True)
            if await uow.session.scalar(select(m.AttendanceEvent.id).where(
                    m.AttendanceEvent.invitation_id == row.id,
                    m.AttendanceEvent.at >= meeting.starts_at - self.early).limit(1)):
                # Attendance is kept whole: withdrawing would take the person's joins and leaves with it.
                # (A link tried days before counts for nothing, and goes.) The invitation's row is
                # locked: a join being written now is either seen here or waits for this to end.
                raise Conflict("this invitation has attendance on record for its meeting; it stays so that "
                               "the record of who took part does")
            await withdraw_mail(uow.session, row, meeting)
            await uow.session.delete(row)
            await plan_meeting(uow.session, meeting)
            uow.audit("uninvited", "invitation", invitation_id, {"meeting_id": row.meeting_id, "person_id": row.person_id})
            await uow.commit()

    async def _load(self, uow: UnitOfWork, invitation_id: uuid.UUID,
                    lock: bool = True) -> tuple[m.Invitation, m.Meeting]:
        """The invitation and its meeting; for a write (`lock`) the meeting locked and read afresh
        as in `create`, and the invitation's row locked."""
        s = uow.session
        row = await s.get(m.Invitation, invitation_id)
        if row is None:
            raise NotFound(f"no invitation with id {invitation_id}")
        if not lock:
            meeting = await s.get(m.Meeting, row.meeting_id)
            assert meeting is not None
            return row, meeting
        # The meeting first, then the invitation: the order every write of a meeting takes them in.
        meeting = (await lock_meetings(s, [row.meeting_id])).get(row.meeting_id)
        row = await s.get(m.Invitation, invitation_id, with_for_update=True, populate_existing=True)
        if meeting is None or row is None:
            raise NotFound(f"no invitation with id {invitation_id}")
        return row, meeting

    @staticmethod
    async def _check_site(uow: UnitOfWork, site_id: uuid.UUID | None) -> None:
        if site_id is not None and await uow.session.get(m.Site, site_id) is None:
            raise Invalid("site_id", f"no site with id {site_id}")

    @staticmethod
    def _check_sessions(meeting: m.Meeting, ids: list[uuid.UUID] | None) -> list[str] | None:
        if ids is None:
            return None
        known = {s.id for s in meeting.sessions}
        for i, ident in enumerate(ids):
            if ident not in known:
                raise Invalid(f"session_ids.{i}", f"no session {ident} in this meeting")
        return [str(i) for i in dict.fromkeys(ids)]

    @staticmethod
    def _all(meeting: m.Meeting) -> list[uuid.UUID]:
        return [s.id for s in sorted(meeting.sessions, key=lambda s: (s.starts_at, s.id))]
