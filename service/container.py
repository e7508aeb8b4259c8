"""The services one app holds: built once by create_app, disposed with it."""
from __future__ import annotations

from dataclasses import dataclass

from connectors.calendar import CalendarAccount, CalendarConnector, make_connector
from schemas import api
from service.calendar.plan import PUSH
from service.calendar.pull import PullRules
from service.calendar.push import CalendarPusher
from service.calendar.sync import CalendarSync, SyncLoop
from service.db.engine import Database
from service.http.auth import TokenVerifier
from service.metrics import Metrics
from service.outbox import OutboxWorker, retry_now
from service.links import LinkKeys
from service.settings import Settings, kept_secret
from service.usecases.audit import AuditLog
from service.usecases.calendars import CalendarStatus
from service.usecases.directory import Directory, make_directory
from service.usecases.feeds import Feeds
from service.usecases.invitations import Invitations
from service.usecases.meetings import Meetings


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
    feeds: Feeds
    outbox: OutboxWorker
    sync_loop: SyncLoop

    def start_workers(self) -> None:
        self.db.on_jobs.append(self.outbox.wake.set)
        self.outbox.start()
        self.sync_loop.start()

    async def stop_workers(self) -> None:
        await self.sync_loop.stop()
        await self.outbox.stop()
        await self.calendar.close()

    async def sync_now(self) -> api.SyncResult:
        """Pull every calendar, then run what that and earlier changes queued."""
        await retry_now(self.db)
        result = await self.calendar_sync.sync_all()
        result.jobs_run = await self.outbox.run_once()
        return result


def build_services(settings: Settings, db: Database, secret: str) -> Services:
    metrics = Metrics()
    meetings = Meetings(db, on_booking=metrics.booking)
    accounts = [CalendarAccount(a.url, a.username, a.password, a.verify_tls) for a in settings.calendar.accounts]
    connector = make_connector("caldav", accounts)
    rules = PullRules(meetings, settings.calendar.client_changes)
    sync = CalendarSync(db, connector, rules)
    pusher = CalendarPusher(db, connector, settings, rules)
    return Services(
        settings=settings,
        db=db,
        metrics=metrics,
        verifier=TokenVerifier(settings, secret),
        directory=make_directory(db, settings.http.public_url),
        meetings=meetings,
        invitations=Invitations(db, LinkKeys(kept_secret(settings, "link_secret"), settings.http.public_url)),
        audit=AuditLog(db),
        calendar=connector,
        calendar_sync=sync,
        calendar_status=CalendarStatus(db),
        feeds=Feeds(db, settings),
        outbox=OutboxWorker(db, {PUSH: pusher}),
        sync_loop=SyncLoop(sync, settings.calendar.sync_interval_s),
    )
