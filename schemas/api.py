"""Request and response bodies of the HTTP API (v1)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator, model_validator

from schemas.common import Out, Wire


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name of a folder, "Europe"
        raise ValueError(f"unknown IANA time zone {name!r}") from exc
    return name


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in value):
        raise ValueError("not an email address")
    return value


def _url(value: str) -> str:
    # The pattern lets "http://[" through; the calendar connector could not use it.
    try:
        parts = urlsplit(value)
        host, _ = parts.hostname, parts.port  # a bad port raises too
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if not host:
        raise ValueError("not a URL: no host")
    return value


def _not_null(cls: type, value: Any) -> Any:
    """For patches: leaving a field out keeps it, null would erase what may not be empty."""
    if value is None:
        raise ValueError("may not be null; leave the field out to keep its value")
    return value


def _sane_year(value: datetime) -> datetime:
    # Far-off years overflow when moved between zones, and no meeting is held then.
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


MIN_YEAR, MAX_YEAR = 1900, 2200
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Text = Annotated[str, StringConstraints(max_length=4000)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000), AfterValidator(_url)]
Endpoint = Annotated[str, StringConstraints(pattern=r"^(sips?|h323):\S+$", max_length=500)]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_zone)]
Email = Annotated[str, StringConstraints(min_length=3, max_length=320), AfterValidator(_email)]
ForumKind = Literal["political", "officials"]
Mode = Literal["in_room", "remote"]
Rsvp = Literal["needs-action", "accepted", "declined", "tentative"]
MeetingStatus = Literal["planned", "cancelled"]
Source = Literal["service", "calendar"]

# Times: with an offset they are taken as given; without one they are read in the
# meeting's zone (see service.timeutil), so the schema accepts both forms.
When = Annotated[
    datetime,
    AfterValidator(_sane_year),
    Field(description="ISO 8601; without an offset it is read in the meeting's time zone"),
]


class Stamped(Out):
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


# -- sites -------------------------------------------------------------------
class SiteCreate(Wire):
    name: Name
    city: Name
    timezone: Zone = "Europe/Stockholm"


class SitePatch(Wire):
    name: Name | None = None
    city: Name | None = None
    timezone: Zone | None = None

    _present = field_validator("name", "city", "timezone")(_not_null)


class SiteOut(Stamped):
    name: str
    city: str
    timezone: str


# -- rooms -------------------------------------------------------------------
class RoomCreate(Wire):
    site_id: uuid.UUID
    name: Name
    capacity: Annotated[int, Field(ge=0, le=100_000)] = 0
    equipment: Annotated[list[Name], Field(max_length=50)] = []
    video_endpoint: Endpoint | None = None
    calendar_url: Url | None = None


class RoomPatch(Wire):
    site_id: uuid.UUID | None = None
    name: Name | None = None
    capacity: Annotated[int, Field(ge=0, le=100_000)] | None = None
    equipment: Annotated[list[Name], Field(max_length=50)] | None = None
    video_endpoint: Endpoint | None = None
    calendar_url: Url | None = None

    _present = field_validator("site_id", "name", "capacity", "equipment")(_not_null)


class RoomOut(Stamped):
    site_id: uuid.UUID
    name: str
    capacity: int
    equipment: list[str]
    video_endpoint: str | None
    calendar_url: str | None
    feed_url: str | None = Field(default=None, description="ICS subscription URL; shown to the secretariat only")


class BusyQuery(Wire):
    from_: When | None = Field(default=None, alias="from", description="Default: now")
    to: When | None = Field(default=None, description="Default: 30 days after `from`")


class BusyOut(BaseModel):
    starts_at: datetime
    ends_at: datetime
    source: Source
    meeting_id: uuid.UUID | None
    title: str | None
    timezone: str


class BusyList(BaseModel):
    room_id: uuid.UUID
    items: list[BusyOut]


# -- people ------------------------------------------------------------------
class PersonCreate(Wire):
    name: Name
    email: Email
    organisation: Name | None = None
    region: Name | None = None


class PersonPatch(Wire):
    name: Name | None = None
    email: Email | None = None
    organisation: Name | None = None
    region: Name | None = None

    _present = field_validator("name", "email")(_not_null)


class PersonOut(Stamped):
    name: str
    email: str
    organisation: str | None
    region: str | None


# -- forums ------------------------------------------------------------------
class ForumCreate(Wire):
    name: Title
    kind: ForumKind
    calendar_url: Url | None = None


class ForumPatch(Wire):
    name: Title | None = None
    kind: ForumKind | None = None
    calendar_url: Url | None = None

    _present = field_validator("name", "kind")(_not_null)


class ForumOut(Stamped):
    name: str
    kind: ForumKind
    calendar_url: str | None
    feed_url: str | None = Field(default=None, description="ICS subscription URL; shown to the secretariat only")


# -- meetings and sessions ---------------------------------------------------
class SessionIn(Wire):
    title: Title
    topic: Text | None = None
    starts_at: When
    ends_at: When


class SessionPatch(Wire):
    title: Title | None = None
    topic: Text | None = None
    starts_at: When | None = None
    ends_at: When | None = None


class SessionOut(Stamped):
    meeting_id: uuid.UUID
    title: str
    topic: str | None
    starts_at: datetime
    ends_at: datetime
    timezone: str


class ConferenceIn(Wire):
    provider: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class ConferenceOut(Out):
    provider: str
    status: str
    host_url: str | None = None
    sip_uri: str | None = None


class MeetingCreate(Wire):
    forum_id: uuid.UUID
    title: Title
    description: Text | None = None
    starts_at: When
    ends_at: When
    timezone: Zone = "Europe/Stockholm"
    room_ids: Annotated[list[uuid.UUID], Field(max_length=20)] = []
    conference: ConferenceIn | None = None
    sessions: Annotated[list[SessionIn], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _distinct_rooms(self) -> "MeetingCreate":
        if len(set(self.room_ids)) != len(self.room_ids):
            raise ValueError("room_ids: a room is listed twice")
        return self


class MeetingPatch(Wire):
    forum_id: uuid.UUID | None = None
    title: Title | None = None
    description: Text | None = None
    starts_at: When | None = None
    ends_at: When | None = None
    timezone: Zone | None = None
    room_ids: Annotated[list[uuid.UUID], Field(max_length=20)] | None = None
    conference: ConferenceIn | None = None
    sessions: Annotated[list[SessionIn], Field(max_length=100)] | None = None

    @model_validator(mode="after")
    def _distinct_rooms(self) -> "MeetingPatch":
        if self.room_ids is not None and len(set(self.room_ids)) != len(self.room_ids):
            raise ValueError("room_ids: a room is listed twice")
        return self


class MeetingOut(Stamped):
    forum_id: uuid.UUID
    title: str
    description: str | None
    starts_at: datetime
    ends_at: datetime
    timezone: str
    room_ids: list[uuid.UUID]
    conference: ConferenceOut | None
    sessions: list[SessionOut]
    status: MeetingStatus
    uid: str
    sequence: int


class MeetingQuery(Wire):
    forum_id: uuid.UUID | None = None
    status: MeetingStatus | None = None
    from_: When | None = Field(default=None, alias="from", description="Meetings ending after this")
    to: When | None = Field(default=None, description="Meetings starting before this")
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


class PageQuery(Wire):
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


# -- invitations -------------------------------------------------------------
class InvitationCreate(Wire):
    person_id: uuid.UUID
    mode: Mode
    site_id: uuid.UUID | None = None
    session_ids: Annotated[list[uuid.UUID], Field(max_length=100)] | None = Field(
        default=None, description="The sessions the person is expected at; null or absent: all"
    )

    @model_validator(mode="after")
    def _site_for_room(self) -> "InvitationCreate":
        if self.mode == "in_room" and self.site_id is None:
            raise ValueError("site_id: required when mode is in_room")
        return self


class InvitationPatch(Wire):
    mode: Mode | None = None
    site_id: uuid.UUID | None = None
    session_ids: Annotated[list[uuid.UUID], Field(max_length=100)] | None = None
    rsvp: Rsvp | None = None


class InvitationOut(Stamped):
    meeting_id: uuid.UUID
    person_id: uuid.UUID
    mode: Mode
    site_id: uuid.UUID | None
    session_ids: list[uuid.UUID]
    rsvp: Rsvp
    join_url: str | None = Field(default=None, description="Only in the answer to create and reissue")


# -- audit -------------------------------------------------------------------
class AuditOut(Out):
    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    details: dict


class AuditQuery(Wire):
    entity: Annotated[str, StringConstraints(max_length=40)] | None = None
    entity_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


class SessionList(BaseModel):
    items: list[SessionOut]


# -- calendars -----------------------------------------------------------------
class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    meeting_id: uuid.UUID | None
    status: Literal["pending", "running", "failed"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


class CalendarOut(BaseModel):
    id: uuid.UUID
    url: str
    purpose: Literal["forum", "room"]
    owner_id: uuid.UUID
    owner: str | None
    last_sync_at: datetime | None
    sync_token_kept: bool
    last_error: str | None
    objects: int = Field(description="Meetings of ours stored in the calendar")
    busy_blocks: int = Field(description="Events of others found in the calendar that block the room")
    pending_jobs: int
    failed_jobs: int
    jobs: list[JobOut] = Field(description="Jobs not yet done, with their last error")


class CalendarList(BaseModel):
    items: list[CalendarOut]


class SyncResult(BaseModel):
    calendars: int
    changed: int
    deleted: int
    errors: list[str]
    jobs_run: int = Field(description="Outbox jobs run by this request; it claims jobs for at most 20 s, and what is "
                                      "left stays pending for the background worker (`GET /api/v1/calendars`)")


class OutboxJobOut(BaseModel):
    """A job of the outbox not yet done: a calendar push, a mail, a conference change."""

    id: uuid.UUID
    kind: str = Field(description="What the job does, e.g. `mail.invitation`, `calendar.push`, `video.conference`")
    key: str | None = Field(description="What the job converges; at most one job per key waits at a time")
    status: Literal["pending", "running", "failed"] = Field(
        description="`pending`: waits for its next attempt; `running`: a worker holds it; `failed`: refused for good")
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    meeting_id: uuid.UUID | None = None
    invitation_id: uuid.UUID | None = None
    created_at: datetime


class OutboxQuery(Wire):
    kind: Annotated[str, StringConstraints(max_length=40)] | None = Field(
        default=None, description="Only jobs of this kind, or of kinds starting with it followed by a dot (`mail`)")
    status: Literal["pending", "running", "failed"] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


class ConflictOut(BaseModel):
    id: uuid.UUID
    kind: str
    room_id: uuid.UUID | None
    meeting_id: uuid.UUID | None
    calendar_url: str | None
    external_uid: str | None
    detail: str
    status: Literal["open", "resolved"]
    created_at: datetime
    resolved_at: datetime | None


class ConflictQuery(Wire):
    status: Literal["open", "resolved"] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    cursor: Annotated[str, StringConstraints(max_length=500)] | None = None


# -- attendance ----------------------------------------------------------------
class AttendanceRow(BaseModel):
    invitation_id: uuid.UUID
    person_id: uuid.UUID
    name: str
    email: str
    organisation: str | None
    mode: Mode
    site: str | None
    session_id: uuid.UUID | None = Field(description="Null when the meeting has no sessions: the whole meeting")
    session: str
    session_starts_at: datetime
    session_ends_at: datetime
    expected: bool
    present: bool
    minutes: float
    first_join: datetime | None
    last_leave: datetime | None
    source: str | None = Field(description="Where presence came from: a provider name, `link` or `manual`")
    estimated: bool = Field(description="True when an end was not reported (a link open, a join with no leave)")


class SessionSummary(BaseModel):
    session_id: uuid.UUID | None
    session: str
    starts_at: datetime
    ends_at: datetime
    expected: int
    present: int
    present_unexpected: int
    remote_expected: int
    remote_present: int


class AttendanceReport(BaseModel):
    meeting_id: uuid.UUID
    title: str
    timezone: str
    generated_at: datetime
    rows: list[AttendanceRow]
    sessions: list[SessionSummary]


class AttendanceQuery(Wire):
    delimiter: Literal["comma", "semicolon"] = Field(
        default="comma", description="CSV only: `semicolon` suits spreadsheets set up for Swedish")


class ManualAttendance(Wire):
    invitation_id: uuid.UUID
    kind: Literal["joined", "left"]
    at: When
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class AttendanceEventOut(BaseModel):
    id: uuid.UUID
    invitation_id: uuid.UUID
    kind: str
    at: datetime
    source: str
