"""The services one app holds: built once by create_app, disposed with it."""
from __future__ import annotations

from dataclasses import dataclass

from service.db.engine import Database
from service.http.auth import TokenVerifier
from service.metrics import Metrics
from service.settings import Settings
from service.usecases.audit import AuditLog
from service.usecases.directory import Directory, make_directory
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


def build_services(settings: Settings, db: Database, secret: str) -> Services:
    metrics = Metrics()
    return Services(
        settings=settings,
        db=db,
        metrics=metrics,
        verifier=TokenVerifier(settings, secret),
        directory=make_directory(db, settings.http.public_url),
        meetings=Meetings(db, on_booking=metrics.booking),
        invitations=Invitations(db),
        audit=AuditLog(db),
    )
