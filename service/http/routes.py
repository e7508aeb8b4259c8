"""The v1 API: each handler parses, calls one use-case, and returns its result."""
from __future__ import annotations

from aiohttp import web

from schemas import api
from service.participation.attendance import to_csv
from service.http.api import Api, Ctx

v1 = Api()
P = "/api/v1"


def _directory_routes(name: str, tag: str, create: type, patch: type, out: type) -> None:
    """The five routes of a directory resource (sites, rooms, people, forums)."""
    base = f"{P}/{name}"

    async def list_(ctx: Ctx):  # noqa: ANN202
        return await getattr(ctx.svc.directory, name).list(ctx.actor, ctx.query.limit, ctx.query.cursor)

    async def create_(ctx: Ctx):  # noqa: ANN202
        return await getattr(ctx.svc.directory, name).create(ctx.actor, ctx.body.model_dump())

    async def get_(ctx: Ctx):  # noqa: ANN202
        return await getattr(ctx.svc.directory, name).get(ctx.actor, ctx.ids["id"])

    async def patch_(ctx: Ctx):  # noqa: ANN202
        return await getattr(ctx.svc.directory, name).update(
            ctx.actor, ctx.ids["id"], ctx.body.model_dump(exclude_unset=True)
        )

    async def delete_(ctx: Ctx):  # noqa: ANN202
        await getattr(ctx.svc.directory, name).delete(ctx.actor, ctx.ids["id"])

    for fn, verb in ((list_, "list"), (create_, "create"), (get_, "get"), (patch_, "update"), (delete_, "delete")):
        fn.__name__ = f"{verb}_{name}"
    v1.route("GET", base, summary=f"List {name}", tag=tag, query=api.PageQuery, response=out, paged=True)(list_)
    v1.route("POST", base, summary=f"Create one of the {name}", tag=tag, role="secretariat", body=create,
             response=out, status=201)(create_)
    v1.route("GET", base + "/{id}", summary=f"Read one of the {name}", tag=tag, response=out)(get_)
    v1.route("PATCH", base + "/{id}", summary=f"Change one of the {name}", tag=tag, role="secretariat",
             body=patch, response=out)(patch_)
    v1.route("DELETE", base + "/{id}", summary=f"Delete one of the {name} (refused while it is in use)", tag=tag,
             role="secretariat", status=204)(delete_)


_directory_routes("sites", "directory", api.SiteCreate, api.SitePatch, api.SiteOut)
_directory_routes("rooms", "directory", api.RoomCreate, api.RoomPatch, api.RoomOut)
_directory_routes("people", "directory", api.PersonCreate, api.PersonPatch, api.PersonOut)
_directory_routes("forums", "directory", api.ForumCreate, api.ForumPatch, api.ForumOut)


async def rotate_forum_feed(ctx: Ctx) -> api.ForumOut:
    return await ctx.svc.directory.forums.rotate_feed(ctx.actor, ctx.ids["id"])


async def rotate_room_feed(ctx: Ctx) -> api.RoomOut:
    return await ctx.svc.directory.rooms.rotate_feed(ctx.actor, ctx.ids["id"])


v1.route("POST", P + "/forums/{id}/feed/rotate", summary="Replace the forum's feed URL; the old one stops working",
         tag="calendars", role="secretariat", response=api.ForumOut)(rotate_forum_feed)
v1.route("POST", P + "/rooms/{id}/feed/rotate", summary="Replace the room's feed URL; the old one stops working",
         tag="calendars", role="secretariat", response=api.RoomOut)(rotate_room_feed)


@v1.route("GET", P + "/rooms/{id}/busy", summary="Busy intervals of a room: bookings and calendar events",
          tag="directory", query=api.BusyQuery, response=api.BusyList)
async def room_busy(ctx: Ctx) -> api.BusyList:
    return await ctx.svc.meetings.busy(ctx.ids["id"], ctx.query.from_, ctx.query.to)


# -- meetings ------------------------------------------------------------------
@v1.route("GET", P + "/meetings", summary="List meetings, by forum, status and time window", tag="meetings",
          query=api.MeetingQuery, response=api.MeetingOut, paged=True)
async def list_meetings(ctx: Ctx):  # noqa: ANN201
    return await ctx.svc.meetings.list(ctx.query)


@v1.route("POST", P + "/meetings", summary="Book a meeting with its rooms and sessions", tag="meetings",
          role="secretariat", body=api.MeetingCreate, response=api.MeetingOut, status=201)
async def create_meeting(ctx: Ctx) -> api.MeetingOut:
    return await ctx.svc.meetings.create(ctx.actor, ctx.body)


@v1.route("GET", P + "/meetings/{id}", summary="Read a meeting", tag="meetings", response=api.MeetingOut)
async def get_meeting(ctx: Ctx) -> api.MeetingOut:
    return await ctx.svc.meetings.get(ctx.ids["id"])


@v1.route("PATCH", P + "/meetings/{id}", summary="Change or reschedule a meeting", tag="meetings",
          role="secretariat", body=api.MeetingPatch, response=api.MeetingOut)
async def update_meeting(ctx: Ctx) -> api.MeetingOut:
    return await ctx.svc.meetings.update(ctx.actor, ctx.ids["id"], ctx.body)


@v1.route("DELETE", P + "/meetings/{id}", summary="Cancel a meeting: it stays, its rooms are freed", tag="meetings",
          role="secretariat", response=api.MeetingOut)
async def cancel_meeting(ctx: Ctx) -> api.MeetingOut:
    return await ctx.svc.meetings.cancel(ctx.actor, ctx.ids["id"])


@v1.route("GET", P + "/meetings/{id}/sessions", summary="The sessions of a meeting", tag="meetings",
          response=api.SessionList)
async def list_sessions(ctx: Ctx) -> api.SessionList:
    return api.SessionList(items=await ctx.svc.meetings.list_sessions(ctx.ids["id"]))


@v1.route("POST", P + "/meetings/{id}/sessions", summary="Add a session", tag="meetings", role="secretariat",
          body=api.SessionIn, response=api.SessionOut, status=201)
async def add_session(ctx: Ctx) -> api.SessionOut:
    return await ctx.svc.meetings.add_session(ctx.actor, ctx.ids["id"], ctx.body)


@v1.route("PATCH", P + "/meetings/{id}/sessions/{sid}", summary="Change a session", tag="meetings",
          role="secretariat", body=api.SessionPatch, response=api.SessionOut)
async def update_session(ctx: Ctx) -> api.SessionOut:
    return await ctx.svc.meetings.update_session(ctx.actor, ctx.ids["id"], ctx.ids["sid"], ctx.body)


@v1.route("DELETE", P + "/meetings/{id}/sessions/{sid}", summary="Remove a session", tag="meetings",
          role="secretariat", status=204)
async def delete_session(ctx: Ctx) -> None:
    await ctx.svc.meetings.delete_session(ctx.actor, ctx.ids["id"], ctx.ids["sid"])


# -- invitations ---------------------------------------------------------------
@v1.route("GET", P + "/meetings/{id}/invitations", summary="The invitations of a meeting", tag="invitations",
          query=api.PageQuery, response=api.InvitationOut, paged=True)
async def list_invitations(ctx: Ctx):  # noqa: ANN201
    return await ctx.svc.invitations.list(ctx.ids["id"], ctx.query.limit, ctx.query.cursor)


@v1.route("POST", P + "/meetings/{id}/invitations", summary="Invite a person", tag="invitations",
          role="secretariat", body=api.InvitationCreate, response=api.InvitationOut, status=201)
async def create_invitation(ctx: Ctx) -> api.InvitationOut:
    return await ctx.svc.invitations.create(ctx.actor, ctx.ids["id"], ctx.body)


@v1.route("GET", P + "/invitations/{id}", summary="Read an invitation", tag="invitations",
          response=api.InvitationOut)
async def get_invitation(ctx: Ctx) -> api.InvitationOut:
    return await ctx.svc.invitations.get(ctx.ids["id"])


@v1.route("PATCH", P + "/invitations/{id}", summary="Change an invitation or record its RSVP", tag="invitations",
          role="secretariat", body=api.InvitationPatch, response=api.InvitationOut)
async def update_invitation(ctx: Ctx) -> api.InvitationOut:
    return await ctx.svc.invitations.update(ctx.actor, ctx.ids["id"], ctx.body)


@v1.route("DELETE", P + "/invitations/{id}", summary="Withdraw an invitation", tag="invitations",
          role="secretariat", status=204)
async def delete_invitation(ctx: Ctx) -> None:
    await ctx.svc.invitations.delete(ctx.actor, ctx.ids["id"])


@v1.route("POST", P + "/invitations/{id}/reissue", summary="Revoke the join link and make a new one (in this answer only)",
          tag="invitations", role="secretariat", response=api.InvitationOut)
async def reissue_invitation(ctx: Ctx) -> api.InvitationOut:
    return await ctx.svc.invitations.reissue(ctx.actor, ctx.ids["id"])


# -- attendance ----------------------------------------------------------------
@v1.route("GET", P + "/meetings/{id}/attendance", summary="Who took part in which session (Accept: text/csv for CSV)",
          tag="attendance", query=api.AttendanceQuery, response=api.AttendanceReport, alternatives=("text/csv",))
async def attendance_report(ctx: Ctx):  # noqa: ANN201
    report = await ctx.svc.attendance.report(ctx.ids["id"])
    if "text/csv" not in ctx.request.headers.get("Accept", ""):
        return report
    body = to_csv(report, ";" if ctx.query.delimiter == "semicolon" else ",")
    name = f"attendance-{report.meeting_id}.csv"
    return web.Response(body=body, content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


@v1.route("POST", P + "/meetings/{id}/attendance", summary="Record a join or leave by hand (source manual, audited)",
          tag="attendance", role="secretariat", body=api.ManualAttendance, response=api.AttendanceEventOut, status=201)
async def record_attendance(ctx: Ctx) -> api.AttendanceEventOut:
    return await ctx.svc.attendance.manual(ctx.actor, ctx.ids["id"], ctx.body)


# -- audit ---------------------------------------------------------------------
@v1.route("GET", P + "/audit", summary="The audit log: who changed what, when", tag="audit", role="secretariat",
          query=api.AuditQuery, response=api.AuditOut, paged=True)
async def list_audit(ctx: Ctx):  # noqa: ANN201
    return await ctx.svc.audit.list(ctx.query)


# -- calendars -----------------------------------------------------------------
@v1.route("GET", P + "/calendars", summary="Every calendar the service syncs, with its pending and failed jobs",
          tag="calendars", response=api.CalendarList)
async def list_calendars(ctx: Ctx) -> api.CalendarList:
    return await ctx.svc.calendar_status.calendars()


@v1.route("POST", P + "/calendars/sync", summary="Pull every calendar now and run the due jobs", tag="calendars",
          role="secretariat", response=api.SyncResult)
async def sync_calendars(ctx: Ctx) -> api.SyncResult:
    return await ctx.svc.sync_now()


@v1.route("GET", P + "/outbox", summary="Work on other systems not yet done (mail, calendar pushes, conferences), "
          "with attempts and last error", tag="calendars", role="secretariat", query=api.OutboxQuery,
          response=api.OutboxJobOut, paged=True)
async def list_outbox(ctx: Ctx):  # noqa: ANN201
    return await ctx.svc.outbox_status.jobs(ctx.query)


@v1.route("GET", P + "/conflicts", summary="Clashes between bookings and events made in calendar clients",
          tag="calendars", query=api.ConflictQuery, response=api.ConflictOut, paged=True)
async def list_conflicts(ctx: Ctx):  # noqa: ANN201
    return await ctx.svc.calendar_status.conflicts(ctx.query)
