"""The domain's tables (SQLAlchemy 2). Times are stored in UTC."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """An aware UTC datetime on every database (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the database layer")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Stamped:
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Site(Stamped, Base):
    __tablename__ = "sites"
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))


class Room(Stamped, Base):
    __tablename__ = "rooms"
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    equipment: Mapped[list[str]] = mapped_column(JSON, default=list)
    video_endpoint: Mapped[str | None] = mapped_column(String(500))
    calendar_url: Mapped[str | None] = mapped_column(String(2000))
    # Random, in the room's feed URL; shown to the secretariat, replaced on rotation.
    feed_token: Mapped[str | None] = mapped_column(String(64), unique=True)


class Person(Stamped, Base):
    __tablename__ = "people"
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased copy: an address is unique whatever its case.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    organisation: Mapped[str | None] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(200))


class Forum(Stamped, Base):
    __tablename__ = "forums"
    name: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(20))
    calendar_url: Mapped[str | None] = mapped_column(String(2000))
    feed_token: Mapped[str | None] = mapped_column(String(64), unique=True)


class Meeting(Stamped, Base):
    __tablename__ = "meetings"
    forum_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("forums.id"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="planned")
    uid: Mapped[str] = mapped_column(String(255), unique=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    # Ordered room list as the secretariat gave it; the first is the host room.
    room_ids: Mapped[list[str]] = mapped_column(JSON, default=list)

    sessions: Mapped[list["Session"]] = relationship(
        back_populates="meeting", order_by="Session.starts_at", cascade="all, delete-orphan", lazy="selectin"
    )
    conference: Mapped["Conference | None"] = relationship(
        back_populates="meeting", cascade="all, delete-orphan", lazy="joined", uselist=False
    )

    __table_args__ = (Index("ix_meetings_starts_at_id", "starts_at", "id"),)


class Session(Stamped, Base):
    __tablename__ = "sessions"
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(500))
    topic: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    meeting: Mapped[Meeting] = relationship(back_populates="sessions")


class RoomBooking(Base):
    """A room held for a time: by one of our meetings, or a busy block found in the room's calendar.

    Active bookings with source `service` never overlap per room: on PostgreSQL an
    exclusion constraint (see the first migration) enforces it; on SQLite the
    check and insert share one IMMEDIATE transaction.
    """

    __tablename__ = "room_bookings"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    room_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rooms.id"))
    meeting_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(20), default="service")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # For calendar busy blocks: the calendar object they come from.
    calendar_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("calendars.id", ondelete="CASCADE"))
    external_uid: Mapped[str | None] = mapped_column(String(500))
    external_href: Mapped[str | None] = mapped_column(String(2000))
    external_etag: Mapped[str | None] = mapped_column(String(500))
    summary: Mapped[str | None] = mapped_column(String(500))
    # For the blocks of a recurring event whose series goes on: the end of the window it was read to
    # (the sync reads it again before that). An inactive row holds it for a series with no
    # occurrence in the window yet.
    series_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        # The conflict check walks this index backwards from the new end time.
        Index("ix_room_bookings_lookup", "room_id", "active", "source", "starts_at"),
    )


class Conference(Stamped, Base):
    __tablename__ = "conferences"
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(500))
    host_url: Mapped[str | None] = mapped_column(String(2000))
    sip_uri: Mapped[str | None] = mapped_column(String(500))
    dial_in: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    meeting: Mapped[Meeting] = relationship(back_populates="conference")


class Invitation(Stamped, Base):
    __tablename__ = "invitations"
    meeting_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("people.id"), index=True)
    mode: Mapped[str] = mapped_column(String(20))
    site_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sites.id"))
    # Null: expected at every session of the meeting.
    session_ids: Mapped[list[str] | None] = mapped_column(JSON)
    rsvp: Mapped[str] = mapped_column(String(20), default="needs-action")
    # Which join link is current: reissuing revokes it and moves to the next.
    token_generation: Mapped[int] = mapped_column(Integer, default=1)
    # SHA-256 of the last personal copy mailed, so an unchanged state is not mailed twice.
    mailed_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("meeting_id", "person_id", name="uq_invitations_meeting_person"),)


class JoinToken(Base):
    """A personal join link, kept only as the SHA-256 of its token.

    Revoked ones stay, so that an old link answers "revoked" (410) rather than
    "unknown" (404). A link expires with its meeting (plus a grace period).
    """

    __tablename__ = "join_tokens"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    invitation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AttendanceEvent(Base):
    """Append-only: what a link, a provider or the secretariat reported."""

    __tablename__ = "attendance_events"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    invitation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("invitations.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(32))
    # Provider's event identity, so a retried webhook is recorded once.
    dedup_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Calendar(Stamped, Base):
    """A CalDAV collection the service writes to and reads from."""

    __tablename__ = "calendars"
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    purpose: Mapped[str] = mapped_column(String(20))  # forum or room
    owner_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    sync_token: Mapped[str | None] = mapped_column(Text)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class CalendarObject(Base):
    """One of our events as stored in one calendar: its href and ETag."""

    __tablename__ = "calendar_objects"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    calendar_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("calendars.id", ondelete="CASCADE"))
    meeting_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"), index=True)
    uid: Mapped[str] = mapped_column(String(500))
    href: Mapped[str] = mapped_column(String(2000))
    etag: Mapped[str | None] = mapped_column(String(500))
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    # The attendees' PARTSTATs (by lower-case address) in the copy the server holds, as far as we
    # know it: what we last wrote or last read there. A pull takes an RSVP from a client's copy only
    # where it differs from this, so a client's edit of anything else, made on a copy older than an
    # RSVP given through the service, does not undo that RSVP. None: not known (an object the push
    # adopted after a lost answer, or a record from before this column).
    partstats: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (UniqueConstraint("calendar_id", "uid", name="uq_calendar_objects_calendar_uid"),)
    # A pull that sees an object gone and a push that removed it may both drop its record; the one
    # that finds it gone already has nothing left to do.
    __mapper_args__ = {"confirm_deleted_rows": False}


class Conflict(Stamped, Base):
    """A clash between our booking and an event made in a calendar client."""

    __tablename__ = "conflicts"
    room_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rooms.id"))
    meeting_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("meetings.id", ondelete="CASCADE"))
    calendar_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("calendars.id", ondelete="CASCADE"))
    external_uid: Mapped[str | None] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxJob(Base):
    """Work on the outside world to do after a commit."""

    __tablename__ = "outbox_jobs"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    # Jobs with the same key run in order, one at a time.
    key: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The claim that made it running: a worker that lost the answer to its claim's commit (the
    # connection went) gives back what that claim took, instead of leaving it for the lease.
    claim: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        Index("ix_outbox_jobs_due", "status", "next_attempt_at"),
        # At most one waiting job per key: a change while one waits needs no second.
        Index(
            "uq_outbox_jobs_pending_key", "key", unique=True,
            sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'"),
        ),
    )


class AuditEntry(Base):
    __tablename__ = "audit_entries"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_audit_entries_at_id", "at", "id"),
        Index("ix_audit_entries_entity", "entity", "entity_id"),
    )
