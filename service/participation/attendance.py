"""Attendance: events from links, providers and the secretariat, and the report made of them."""
from __future__ import annotations

import csv
import io
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas import api
from service.db import models as m
from service.db.engine import Database, upsert_insert
from service.errors import Invalid, NotFound
from service.participation.intervals import Mark, overlap, presence
from service.timeutil import local, now, to_utc
from service.usecases.base import Actor, UnitOfWork


async def record(session: AsyncSession, invitation_id: uuid.UUID, kind: str, at: datetime, source: str,
                 dedup_key: str | None) -> bool:
    """Append one event; a repeat of the same `dedup_key` is ignored. True when it was new."""
    stmt = upsert_insert(session.bind.dialect.name)(m.AttendanceEvent).values(
        id=uuid.uuid4(), invitation_id=invitation_id, kind=kind, at=at, source=source, dedup_key=dedup_key,
        recorded_at=now())
    if dedup_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedup_key"])
    result = await session.execute(stmt)
    return bool(result.rowcount)


class Attendance:
    def __init__(self, db: Database, reports_presence: Iterable[str], early: timedelta = timedelta(minutes=30)) -> None:
        self.db = db
        # Providers whose webhooks say who joined and left (not just who opened a link).
        self.reports_presence = set(reports_presence)
        # How early before its start a meeting's video opens: presence with no reported end counts
        # from then on only (`presence`).
        self.early = early

    async def ingest(self, events: list[tuple[str, str, datetime, str, str]]) -> int:
        """Record provider events (invitation id, kind, at, source, dedup key); unknown invitations are skipped."""
        if not events:
            return 0
        ids = {}
        for inv, *_ in events:
            try:
                ids[inv] = uuid.UUID(inv)
            except ValueError:
                continue
        new = 0
        async with UnitOfWork(self.db, Actor("webhook"), write=True) as uow:
            known = set(await uow.session.scalars(select(m.Invitation.id).where(m.Invitation.id.in_(set(ids.values())))))
            for inv, kind, at, source, key in events:
                ident = ids.get(inv)
                if ident in known and await record(uow.session, ident, kind, at, source, key):
                    new += 1
            await uow.commit()
        return new

    async def manual(self, actor: Actor, meeting_id: uuid.UUID, body: api.ManualAttendance) -> api.AttendanceEventOut:
        async with UnitOfWork(self.db, actor, write=True) as uow:
            meeting = await uow.session.get(m.Meeting, meeting_id)
            if meeting is None:
                raise NotFound(f"no meeting with id {meeting_id}")
            inv = await uow.session.get(m.Invitation, body.invitation_id)
            if inv is None or inv.meeting_id != meeting_id:
                raise Invalid("invitation_id", "no such invitation in this meeting")
            at = to_utc(body.at, meeting.timezone, "at")
            event = m.AttendanceEvent(invitation_id=inv.id, kind=body.kind, at=at, source="manual", recorded_at=now())
            uow.session.add(event)
            await uow.session.flush()
            uow.audit("attendance_recorded", "invitation", inv.id, {"kind": body.kind, "at": at, "note": body.note})
            await uow.commit()
            return api.AttendanceEventOut(id=event.id, invitation_id=inv.id, kind=event.kind,
                                          at=local(at, meeting.timezone), source="manual")

    async def report(self, meeting_id: uuid.UUID) -> api.AttendanceReport:
        async with UnitOfWork(self.db, Actor("reader"), write=False) as uow:
            s = uow.session
            meeting = await s.get(m.Meeting, meeting_id)
            if meeting is None:
                raise NotFound(f"no meeting with id {meeting_id}")
            zone = meeting.timezone
            # Columns, not ORM objects: thousands of rows without identity-map bookkeeping (and far
            # less for the garbage collector to scan), so the report grows linearly with the people.
            people = (await s.execute(
                select(m.Invitation.id, m.Invitation.session_ids, m.Invitation.mode, m.Invitation.site_id,
                       m.Person.id, m.Person.name, m.Person.email, m.Person.organisation)
                .join(m.Person, m.Person.id == m.Invitation.person_id)
                .where(m.Invitation.meeting_id == meeting_id).order_by(m.Person.name, m.Invitation.id))).all()
            sites = dict((await s.execute(select(m.Site.id, m.Site.name))).all())
            marks: dict[uuid.UUID, list[Mark]] = defaultdict(list)
            for inv_id, at, kind, source in await s.execute(
                    select(m.AttendanceEvent.invitation_id, m.AttendanceEvent.at, m.AttendanceEvent.kind,
                           m.AttendanceEvent.source)
                    .join(m.Invitation, m.Invitation.id == m.AttendanceEvent.invitation_id)
                    .where(m.Invitation.meeting_id == meeting_id)):
                marks[inv_id].append(Mark(at, kind, source))
            provider = meeting.conference.provider if meeting.conference else None
            spans = [(x.id, x.title, x.starts_at, x.ends_at)
                     for x in sorted(meeting.sessions, key=lambda x: (x.starts_at, x.id))] or [
                (None, meeting.title, meeting.starts_at, meeting.ends_at)]
            # Read now: the session's end expires the rows.
            meeting_id, title, ends_at, starts_at = meeting.id, meeting.title, meeting.ends_at, meeting.starts_at
        reports = provider in self.reports_presence
        until = min(ends_at, now())
        out_rows: list[api.AttendanceRow] = []
        for inv_id, session_ids, mode, site_id, person_id, name, email, organisation in people:
            intervals = presence(marks.get(inv_id, []), until, reports, starts_at - self.early)
            expected_ids = None if session_ids is None else {uuid.UUID(x) for x in session_ids}
            for sid, session_title, start, end in spans:
                o = overlap(intervals, start, end)
                out_rows.append(api.AttendanceRow(
                    invitation_id=inv_id, person_id=person_id, name=name, email=email,
                    organisation=organisation, mode=mode, site=sites.get(site_id),
                    session_id=sid, session=session_title, session_starts_at=local(start, zone), session_ends_at=local(end, zone),
                    expected=expected_ids is None or sid in expected_ids, present=o.seconds > 0,
                    minutes=round(o.seconds / 60, 1),
                    first_join=local(o.first_join, zone) if o.first_join else None,
                    last_leave=local(o.last_leave, zone) if o.last_leave else None,
                    source=o.source, estimated=o.estimated))
        summaries = []
        for sid, session_title, start, end in spans:
            these = [r for r in out_rows if r.session_id == sid]
            summaries.append(api.SessionSummary(
                session_id=sid, session=session_title, starts_at=local(start, zone), ends_at=local(end, zone),
                expected=sum(r.expected for r in these), present=sum(r.expected and r.present for r in these),
                present_unexpected=sum(r.present and not r.expected for r in these),
                remote_expected=sum(r.expected and r.mode == "remote" for r in these),
                remote_present=sum(r.expected and r.present and r.mode == "remote" for r in these)))
        return api.AttendanceReport(meeting_id=meeting_id, title=title, timezone=zone, generated_at=now(),
                                    rows=out_rows, sessions=summaries)


CSV_COLUMNS = ["name", "email", "organisation", "mode", "site", "session", "session_starts_at", "session_ends_at",
               "expected", "present", "minutes", "first_join", "last_leave", "source", "estimated"]


def to_csv(report: api.AttendanceReport, delimiter: str = ",") -> bytes:
    """The report as CSV: UTF-8 with a byte-order mark, so spreadsheets read å, ä and ö right."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        values = row.model_dump()
        writer.writerow([_cell(values[c]) for c in CSV_COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    text = str(value)
    # A cell starting with = + - @ would run as a formula in a spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
