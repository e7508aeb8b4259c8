"""Invitation mail: the invitation, its updates and cancellations, sent from the outbox.

A mail job converges like the calendar jobs: it renders the person's copy as the
meeting stands when the job runs, and sends it unless that exact copy was sent
already. The Message-ID is made from the copy, so the one message that can be
sent twice (the service dying between the SMTP server's acceptance and the
job's record) carries the same Message-ID both times.
"""
from __future__ import annotations

import asyncio
import hashlib
import uuid
from email.utils import formataddr
from typing import TYPE_CHECKING, Any, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.calendar.snapshot import build_event
from service.db import models as m
from service.db.engine import Database
from service.links import LinkKeys, token_hash
from service.outbox import GiveUp, Job, RetryLater, enqueue
from service.settings import Settings
from service.timeutil import local, now
from service.usecases.base import Actor, UnitOfWork

if TYPE_CHECKING:
    from connectors.mail import MailSender, OutgoingMail

MAIL = "mail.invitation"
WITHDRAWN = "mail.withdrawn"


def invitation_mail_job(invitation_id: uuid.UUID) -> Job:
    """The mail that brings one invited person the invitation as it stands (invited, updated or
    cancelled, decided when it runs; nothing when that very copy was sent already)."""
    return MAIL, {"invitation_id": str(invitation_id)}, f"mail:{invitation_id}"


async def invitee_mail_jobs(session: AsyncSession, meeting_ids: Sequence[uuid.UUID]) -> list[Job]:
    """A mail to every person invited to the meetings (an update or a cancellation, decided when it runs)."""
    invitations = await session.scalars(select(m.Invitation.id).where(m.Invitation.meeting_id.in_(meeting_ids)))
    return [invitation_mail_job(inv_id) for inv_id in invitations]


async def withdraw_mail(session: AsyncSession, inv: m.Invitation, meeting: m.Meeting) -> None:
    """Queue a cancellation for a person whose invitation is withdrawn (if they were mailed before)."""
    person = await session.get(m.Person, inv.person_id)
    if person is None or inv.mailed_hash is None or meeting.status != "planned":
        return
    await enqueue(session, WITHDRAWN, {
        "invitation_id": str(inv.id), "meeting_id": str(meeting.id), "person_id": str(person.id),
        "mode": inv.mode, "generation": inv.token_generation}, f"mail:{inv.id}:withdrawn")


def _recipient(person: m.Person) -> str:
    """"Name <address>"; an address SMTP cannot carry without SMTPUTF8 goes bare, for the sender to refuse."""
    if not person.email.isascii():
        return person.email
    return formataddr((person.name, person.email))


def _templates() -> Environment:
    return Environment(loader=PackageLoader("service", "templates"), autoescape=select_autoescape(["html"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


class InvitationMailer:
    """Handlers of the mail jobs."""

    def __init__(self, db: Database, sender: MailSender, settings: Settings, keys: LinkKeys) -> None:
        self.db = db
        self.sender = sender
        self.settings = settings
        self.keys = keys
        self.env = _templates()
        self.domain = settings.organizer.email.rpartition("@")[2] or "forumbridge.invalid"
        # Held from handing a message to the server until the record that it was sent is committed:
        # mail jobs run concurrently, and without it a crash could catch several messages accepted
        # but not yet recorded (each then sent again). With it, at most one per process.
        self._sending = asyncio.Lock()

    async def invitation(self, payload: dict[str, Any]) -> None:
        inv_id = uuid.UUID(payload["invitation_id"])
        async with self.db.session(write=False) as s:
            inv = await s.get(m.Invitation, inv_id)
            if inv is None:
                return
            meeting = await s.get(m.Meeting, inv.meeting_id)
            person = await s.get(m.Person, inv.person_id)
            if meeting is None or person is None:
                return
            if meeting.status == "cancelled" and inv.mailed_hash is None:
                return  # never invited by mail: nothing to cancel
            event = await build_event(s, meeting, self.settings)
            site = await s.get(m.Site, inv.site_id) if inv.site_id else None
            sessions = [x for x in sorted(meeting.sessions, key=lambda x: x.starts_at)
                        if inv.session_ids is None or str(x.id) in inv.session_ids]
        method = "CANCEL" if meeting.status == "cancelled" else "REQUEST"
        kind = "cancelled" if method == "CANCEL" else ("updated" if inv.mailed_hash else "invited")
        token = self.keys.token(inv.id, inv.token_generation)
        mail, digest = self._compose(kind, method, event, meeting, person, inv, site, sessions, self.keys.url(token))
        if digest == inv.mailed_hash:
            return  # this very copy was sent already
        async with self._sending:
            await self._register(inv_id, inv.token_generation, token)
            await self._send(mail)
            async with UnitOfWork(self.db, Actor("mailer"), write=True) as uow:
                row = await uow.session.get(m.Invitation, inv_id)
                if row is not None:
                    row.mailed_hash = digest
                uow.audit("mail_sent", "invitation", inv_id, {"kind": kind, "sequence": meeting.sequence,
                                                              "message_id": mail.message_id})
                await uow.commit()

    async def _register(self, invitation_id: uuid.UUID, generation: int, token: str) -> None:
        """Make sure the link this mail carries opens: links are found by the hash of their token,
        and a token is made from the link key. Once the key has been rotated ([join] link_secret),
        the first mail of each invitation registers its link under the new key and revokes the
        same generation's link under the old one, so a leaked link stops working with the mail
        that replaces it."""
        digest = token_hash(token)
        known = select(m.JoinToken.id).where(m.JoinToken.token_hash == digest)
        async with self.db.session(write=False) as s:
            if await s.scalar(known) is not None:
                return  # the usual case: a read, no write transaction
        async with UnitOfWork(self.db, Actor("mailer"), write=True) as uow:
            s = uow.session
            if await s.scalar(known) is not None:
                return
            await s.execute(update(m.JoinToken).where(
                m.JoinToken.invitation_id == invitation_id, m.JoinToken.generation == generation,
                m.JoinToken.revoked_at.is_(None)).values(revoked_at=now()))
            s.add(m.JoinToken(invitation_id=invitation_id, generation=generation, token_hash=digest))
            uow.audit("link_rekeyed", "invitation", invitation_id, {"generation": generation})
            await uow.commit()

    async def withdrawn(self, payload: dict[str, Any]) -> None:
        async with self.db.session(write=False) as s:
            meeting = await s.get(m.Meeting, uuid.UUID(payload["meeting_id"]))
            person = await s.get(m.Person, uuid.UUID(payload["person_id"]))
            if meeting is None or person is None:
                return
            event = await build_event(s, meeting, self.settings)
        inv = m.Invitation(id=uuid.UUID(payload["invitation_id"]), mode=payload["mode"], session_ids=None,
                           token_generation=payload["generation"])
        url = self.keys.url(self.keys.token(inv.id, inv.token_generation))
        mail, _ = self._compose("withdrawn", "CANCEL", event, meeting, person, inv, None, [], url)
        await self._send(mail)

    def _compose(self, kind: str, method: str, event: Any, meeting: m.Meeting, person: m.Person,
                 inv: m.Invitation, site: m.Site | None, sessions: list[m.Session], url: str) -> tuple[OutgoingMail, str]:
        from connectors.mail import OutgoingMail
        from service.participation.links import personal_copy

        ics = personal_copy(event, person, inv, url, method)
        digest = hashlib.sha256(method.encode() + b"\0" + ics).hexdigest()
        zone = meeting.timezone
        context = {
            "kind": kind, "person": person.name, "title": meeting.title, "description": meeting.description,
            "start": local(meeting.starts_at, zone), "end": local(meeting.ends_at, zone), "zone": zone,
            "mode": inv.mode, "site": site.name if site else None, "url": url, "sequence": meeting.sequence,
            "sessions": [(local(x.starts_at, zone), local(x.ends_at, zone), x.title) for x in sessions],
            "organizer": self.settings.organizer.name, "organizer_email": self.settings.organizer.email,
        }
        subject = {"invited": "Inbjudan", "updated": "Ändrat", "cancelled": "Inställt", "withdrawn": "Inbjudan återkallad"}[kind]
        mail = OutgoingMail(
            message_id=f"<{inv.id}.{digest[:24]}@{self.domain}>",
            sender=self.settings.mail.sender,
            to=(_recipient(person),),
            subject=f"{subject}: {meeting.title}",
            text=self.env.get_template("mail.txt").render(**context),
            html=self.env.get_template("mail.html").render(**context),
            ics=ics,
            ics_method=method,
        )
        return mail, digest

    async def _send(self, mail: OutgoingMail) -> None:
        from connectors.mail import MailAuthError, MailRejected, MailUnavailable

        try:
            await self.sender.send(mail)
        except MailUnavailable as exc:
            raise RetryLater(f"mail server unavailable: {exc}") from exc
        except MailAuthError as exc:
            raise RetryLater(f"mail server refused our credentials: {exc}") from exc
        except MailRejected as exc:
            raise GiveUp(f"mail server refused the message: {exc}") from exc
