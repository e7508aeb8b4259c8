"""The services one app holds: built once by create_app, disposed with it."""
from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Awaitable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from connectors.calendar import CalendarAccount, CalendarConnector, make_connector
from connectors.mail import MailSender, make_sender
from schemas import api
from service.calendar.plan import PUSH
from service.calendar.pull import PullRules
from service.calendar.push import CalendarPusher
from service.calendar.sync import CalendarSync, SyncLoop
from service.db import models as m
from service.db.engine import Database
from service.http.auth import TokenVerifier
from service.links import LinkKeys
from service.mailing import MAIL, WITHDRAWN, InvitationMailer, invitee_mail_jobs
from service.metrics import Metrics
from service.outbox import Job, OutboxWorker, retry_now
from service.participation.attendance import Attendance
from service.participation.links import Links
from service.participation.video import CONFERENCE, VideoGateway, conference_job
from service.settings import Settings, kept_secret
from service.usecases.audit import AuditLog
from service.usecases.calendars import CalendarStatus
from service.usecases.directory import Directory, make_directory
from service.usecases.feeds import Feeds
from service.usecases.invitations import Invitations
from service.usecases.meetings import Meetings
from service.usecases.outbox_status import OutboxStatus

log = logging.getLogger("forumbridge")

# Each step of stopping gets this long; one that takes longer is abandoned (and reported), so
# that SIGTERM always ends the process.
STOP_STEP_S = 15.0


def _running_tasks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(limit=8, file=out)
    return out.getvalue()


async def stop_step(what: str, step: Awaitable[None], timeout: float = STOP_STEP_S) -> None:
    """Await one step of stopping for at most `timeout` seconds; if it hangs, log what every task
    is waiting on and go on."""
    try:
        await asyncio.wait_for(step, timeout)
    except asyncio.TimeoutError:
        log.error("stopping: %s did not end within %.0f s; going on. Tasks still running:\n%s",
                  what, timeout, _running_tasks())


@dataclass
class Services:
    settings: Settings
    db: Database
    metrics: Metrics
    verifier: TokenVerifier
    directory: Directory
    meetings: Meetings
    invitations: Invitations
    audit: AuditLog
    calendar: CalendarConnector
    calendar_sync: CalendarSync
    calendar_status: CalendarStatus
    outbox_status: OutboxStatus
    feeds: Feeds
    outbox: OutboxWorker
    sync_loop: SyncLoop
    link_keys: LinkKeys
    links: Links
    video: VideoGateway
    attendance: Attendance
    mail: MailSender

    def start_workers(self) -> None:
        self.db.on_jobs.append(self.outbox.wake.set)
        self.outbox.start()
        self.sync_loop.start()

    async def stop_workers(self) -> None:
        await stop_step("the calendar sync", self.sync_loop.stop())
        await stop_step("the outbox worker", self.outbox.stop())
        await stop_step("the join records in flight", self.links.opens.close())
        await stop_step("the CalDAV connector", self.calendar.close())
        await stop_step("the mail connector", self.mail.close())
        await stop_step("the video connectors", self.video.close())

    async def sync_now(self) -> api.SyncResult:
        """Pull every calendar (reading for at most `SYNC_NOW_PULL_S`), then run what that and earlier
        changes queued, claiming jobs for at most `SYNC_NOW_JOBS_S`: what is left stays pending for
        the worker, and a calendar not read is read by the next sync (see /api/v1/calendars)."""
        await retry_now(self.db)
        result = await self.calendar_sync.sync_all(reread=True, within_s=SYNC_NOW_PULL_S)
        result.jobs_run = await self.outbox.run_once(budget_s=SYNC_NOW_JOBS_S)
        return result


# How long an on-demand sync reads calendars, and then claims outbox jobs, before it answers: a
# server that does not answer would otherwise keep the request open for its timeout once per
# calendar, and jobs waiting for it for as long as they pile up.
SYNC_NOW_PULL_S = 20.0
SYNC_NOW_JOBS_S = 20.0


def build_services(settings: Settings, db: Database, secret: str) -> Services:
    metrics = Metrics()
    video = VideoGateway(db, settings)

    async def on_change(session: AsyncSession, changed: Sequence[m.Meeting], new: bool) -> list[Job]:
        jobs = [conference_job(meeting.id) for meeting in changed if meeting.conference is not None]
        if not new:
            jobs += await invitee_mail_jobs(session, [meeting.id for meeting in changed])
        return jobs

    meetings = Meetings(db, on_booking=metrics.booking, on_change=on_change, check_provider=video.check)
    accounts = [CalendarAccount(a.url, a.username, a.password, a.verify_tls) for a in settings.calendar.accounts]
    connector = make_connector("caldav", accounts)
    rules = PullRules(meetings, settings.calendar.client_changes)
    sync = CalendarSync(db, connector, rules)
    pusher = CalendarPusher(db, connector, settings, rules)
    keys = LinkKeys(settings.join.link_secret or kept_secret(settings, "link_secret"), settings.http.public_url)
    sender = make_sender("smtp", **settings.mail.model_dump(exclude={"sender"}))
    mailer = InvitationMailer(db, sender, settings, keys)
    # How early before its start a meeting's video opens: attendance counts from then on.
    early = timedelta(minutes=settings.join.early_minutes)
    return Services(
        settings=settings,
        db=db,
        metrics=metrics,
        verifier=TokenVerifier(settings, secret),
        directory=make_directory(db, settings.http.public_url),
        meetings=meetings,
        invitations=Invitations(db, keys, early),
        audit=AuditLog(db),
        calendar=connector,
        calendar_sync=sync,
        calendar_status=CalendarStatus(db),
        outbox_status=OutboxStatus(db),
        feeds=Feeds(db, settings),
        outbox=OutboxWorker(db, {PUSH: pusher, MAIL: mailer.invitation, WITHDRAWN: mailer.withdrawn,
                                 CONFERENCE: video.converge}),
        sync_loop=SyncLoop(sync, settings.calendar.sync_interval_s),
        link_keys=keys,
        links=Links(db, keys, settings, video),
        video=video,
        attendance=Attendance(db, video.reporting_presence(), early),
        mail=sender,
    )
