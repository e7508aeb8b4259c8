"""A small BigBlueButton API server on loopback that checks checksums the way BBB does.

What it follows (bigbluebutton/bigbluebutton, docs/docs/development/api.md and bbb-common-web's
ValidationService, GetChecksum and GetChecksumValidator, ApiController.groovy):

- the checksum is taken from the parsed ``checksum`` parameter; the raw query string, as
  received, loses ``&checksum=C``, ``checksum=C&`` or ``checksum=C``; the rest is hashed as
  ``call + query + secret``; the algorithm follows the checksum's length (40 sha1, 64 sha256,
  96 sha384, 128 sha512) and must be a supported one; any mismatch is
  ``<response><returncode>FAILED</returncode><messageKey>checksumError</messageKey>
  <message>Checksums do not match</message></response>``;
- ``create`` makes a meeting with a createTime (ms) and internalMeetingID; the same meetingID
  again with the same passwords (or none) answers SUCCESS with messageKey ``duplicateWarning``
  and the existing meeting; with other passwords ``idNotUnique``;
- ``join`` needs an existing meeting (``notFound``), fullName, a createTime equal to the
  meeting's if given (``mismatchCreateTimeParam``), and a role or a matching password; with
  redirect (the default) it answers 302 to the HTML5 client, else the documented XML;
- ``end`` needs an existing meeting (``notFound``) and, if given, the moderator password;
- ``getMeetingInfo`` answers the meeting with its attendees, or ``notFound``.

Simplification: where BBB would redirect a browser to an error page for a failed join, this
answers the error XML, so tests can read the messageKey.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape

from aiohttp import web

_ALGORITHM_BY_LENGTH = {40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _xml(returncode: str, raw: dict[str, str] | None = None, **fields: Any) -> str:
    """A BBB answer; `raw` holds elements whose content is already XML."""
    parts = [f"<returncode>{returncode}</returncode>"]
    parts += [f"<{name}>{escape(str(value))}</{name}>" for name, value in fields.items()]
    parts += [f"<{name}>{value}</{name}>" for name, value in (raw or {}).items()]
    return "<response>" + "".join(parts) + "</response>"


def _failed(key: str, message: str) -> web.Response:
    return web.Response(text=_xml("FAILED", messageKey=key, message=message), content_type="text/xml")


@dataclass
class Attendee:
    user_id: str
    full_name: str
    role: str
    internal_user_id: str


@dataclass
class StandInMeeting:
    meeting_id: str
    name: str
    internal_id: str
    create_time: int
    attendee_pw: str
    moderator_pw: str
    voice_bridge: str
    params: dict[str, str]
    attendees: list[Attendee] = field(default_factory=list)


class BbbStandIn:
    """Start with `await start()`; `url` is the API base, `secret` the shared secret."""

    def __init__(self, secret: str | None = None, supported: Sequence[str] = ("sha1", "sha256", "sha384", "sha512"),
                 dial_number: str = "613-555-1234") -> None:
        self.secret = secret or secrets.token_hex(16)
        self.supported = tuple(supported)
        self.dial_number = dial_number
        self.meetings: dict[str, StandInMeeting] = {}
        self.calls: list[tuple[str, str]] = []  # (call, raw query) in arrival order
        self._last_create_time = 0
        # Failure modes for tests: an HTTP status to answer everything with, or a delay.
        self.fail_status: int | None = None
        self.delay: float = 0.0
        self.garbage: bool = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/bigbluebutton/api"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/bigbluebutton/api/{call}", self._handle)
        app.router.add_post("/bigbluebutton/api/{call}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- BBB's checksum rule ----------------------------------------------------------------

    def checksum_ok(self, call: str, raw_query: str, params: dict[str, list[str]]) -> bool:
        provided = (params.get("checksum") or [""])[0]
        if not provided:
            return False
        query = raw_query.replace("&checksum=" + provided, "")
        query = query.replace("checksum=" + provided + "&", "")
        query = query.replace("checksum=" + provided, "")
        algorithm = _ALGORITHM_BY_LENGTH.get(len(provided))
        if algorithm is None or algorithm not in self.supported:
            return False
        expected = hashlib.new(algorithm, (call + query + self.secret).encode("utf-8")).hexdigest()
        return expected == provided

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = request.match_info["call"]
        # raw_path is the request target as it came off the wire: the query BBB hashes.
        raw_query = request.raw_path.partition("?")[2]
        self.calls.append((call, raw_query))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="<html>Bad Gateway</html>", content_type="text/html")
        if self.garbage:
            return web.Response(text="<html><body>It works!</body></html>", content_type="text/html")
        params = parse_qs(raw_query, keep_blank_values=True)
        if not self.checksum_ok(call, raw_query, params):
            return _failed("checksumError", "Checksums do not match")
        one = {k: v[0] for k, v in params.items()}
        handler = {"create": self._create, "join": self._join, "end": self._end,
                   "getMeetingInfo": self._info}.get(call)
        if handler is None:
            return _failed("unsupportedRequest", "This request is not supported.")
        return handler(one)

    # --- the calls ------------------------------------------------------------------------------

    def _create(self, p: dict[str, str]) -> web.Response:
        meeting_id = p.get("meetingID", "")
        if not 2 <= len(meeting_id) <= 256 or "," in meeting_id:
            return _failed("validationError", "Meeting ID must be between 2 and 256 characters and have no commas")
        name = p.get("name", "")
        if not 2 <= len(name) <= 64:
            return _failed("validationError", "Meeting name must be between 2 and 64 characters")
        existing = self.meetings.get(meeting_id)
        if existing is not None:
            same = (p.get("attendeePW") == existing.attendee_pw and p.get("moderatorPW") == existing.moderator_pw)
            if same or ("attendeePW" not in p and "moderatorPW" not in p):
                return self._meeting_xml(
                    existing, messageKey="duplicateWarning",
                    message="This conference was already in existence and may currently be in progress.")
            return _failed("idNotUnique",
                           "A meeting already exists with that meeting ID.  Please use a different meeting ID.")
        # Strictly increasing, as two creations on a real server never share a millisecond.
        create_time = self._last_create_time = max(int(time.time() * 1000), self._last_create_time + 1)
        meeting = StandInMeeting(
            meeting_id=meeting_id, name=name,
            internal_id=hashlib.sha1(meeting_id.encode()).hexdigest() + f"-{create_time}",
            create_time=create_time, attendee_pw=p.get("attendeePW") or secrets.token_hex(4),
            moderator_pw=p.get("moderatorPW") or secrets.token_hex(4),
            voice_bridge=str(70000 + secrets.randbelow(9999)), params=dict(p))
        self.meetings[meeting_id] = meeting
        return self._meeting_xml(meeting)

    def _meeting_xml(self, m: StandInMeeting, **extra: str) -> web.Response:
        return web.Response(content_type="text/xml", text=_xml(
            "SUCCESS", meetingID=m.meeting_id, internalMeetingID=m.internal_id, parentMeetingID="bbb-none",
            attendeePW=m.attendee_pw, moderatorPW=m.moderator_pw, createTime=m.create_time,
            voiceBridge=m.voice_bridge, dialNumber=self.dial_number,
            createDate=time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(m.create_time / 1000)),
            hasUserJoined=str(bool(m.attendees)).lower(), duration=0, hasBeenForciblyEnded="false", **extra))

    def _join(self, p: dict[str, str]) -> web.StreamResponse:
        meeting = self.meetings.get(p.get("meetingID", ""))
        if meeting is None:
            return _failed("notFound", "A meeting with that ID does not exist")
        if not p.get("fullName"):
            return _failed("validationError", "You must provide your name")
        if "createTime" in p and p["createTime"] != str(meeting.create_time):
            return _failed("mismatchCreateTimeParam",
                           "The createTime parameter submitted mismatches with the current meeting.")
        role = p.get("role", "").upper()
        if role not in ("MODERATOR", "VIEWER"):
            password = p.get("password")
            if password == meeting.moderator_pw:
                role = "MODERATOR"
            elif password == meeting.attendee_pw:
                role = "VIEWER"
            else:
                return _failed("invalidPassword", "You must either send the valid role of the user, or the password")
        internal = "w_" + secrets.token_hex(6)
        meeting.attendees.append(Attendee(p.get("userID") or internal, p["fullName"], role, internal))
        session_token = secrets.token_hex(8)
        client = f"{self.base}/html5client/join?sessionToken={session_token}"
        if p.get("redirect", "true") != "false":
            raise web.HTTPFound(client)
        return web.Response(content_type="text/xml", text=_xml(
            "SUCCESS", messageKey="successfullyJoined", message="You have joined successfully.",
            meeting_id=meeting.internal_id, user_id=internal, auth_token=secrets.token_hex(6),
            session_token=session_token, url=client))

    def _end(self, p: dict[str, str]) -> web.Response:
        meeting = self.meetings.get(p.get("meetingID", ""))
        if meeting is None:
            return _failed("notFound", "A meeting with that ID does not exist")
        if "password" in p and p["password"] != meeting.moderator_pw:
            return _failed("invalidPassword", "You must supply the moderator password for this call.")
        del self.meetings[meeting.meeting_id]
        return web.Response(content_type="text/xml", text=_xml(
            "SUCCESS", messageKey="sentEndMeetingRequest",
            message="A request to end the meeting was sent.  Please wait a few seconds, and then use the "
                    "getMeetingInfo or isMeetingRunning API calls to verify that it was ended."))

    def _info(self, p: dict[str, str]) -> web.Response:
        meeting = self.meetings.get(p.get("meetingID", ""))
        if meeting is None:
            return _failed("notFound", "A meeting with that ID does not exist")
        attendees = "".join(
            f"<attendee><userID>{escape(a.user_id)}</userID><fullName>{escape(a.full_name)}</fullName>"
            f"<role>{a.role}</role></attendee>" for a in meeting.attendees)
        return web.Response(content_type="text/xml", text=_xml(
            "SUCCESS", meetingName=meeting.name, meetingID=meeting.meeting_id,
            internalMeetingID=meeting.internal_id, createTime=meeting.create_time,
            attendeePW=meeting.attendee_pw, moderatorPW=meeting.moderator_pw, running="false",
            participantCount=len(meeting.attendees), raw={"attendees": attendees}))


# --- what bbb-webhooks sends -------------------------------------------------------------------

def form_urlencode(value: str) -> str:
    """The WHATWG form encoding that URLSearchParams.toString() uses: space as '+', only
    ``*-._`` and ASCII letters and digits left as they are."""
    return quote(value, safe="*-._").replace("%20", "+")


def webhook_post(callback_url: str, events: Sequence[dict[str, Any]], secret: str, algorithm: str = "sha1",
                 domain: str = "bbb.example.org", timestamp: int | None = None) -> tuple[str, bytes]:
    """(URL called, body) of one bbb-webhooks callback, made as its callback-emitter.js makes it:
    body ``domain=..&event=[..]&timestamp=..``, checksum = hex(SHA(callbackURL + body + secret))
    appended to the registered URL."""
    event_json = ",".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events)
    ts = timestamp if timestamp is not None else int(time.time() * 1000)
    body = "&".join(f"{k}={form_urlencode(v)}" for k, v in (
        ("domain", domain), ("event", f"[{event_json}]"), ("timestamp", str(ts))))
    digest = hashlib.new(algorithm, (callback_url + body + secret).encode("utf-8")).hexdigest()
    sep = "&" if "?" in callback_url else "?"
    return f"{callback_url}{sep}checksum={digest}", body.encode("ascii")


def mapped_event(kind: str, external_user_id: str, external_meeting_id: str, ts_ms: int,
                 internal_user_id: str = "w_1fewpbchnudl", name: str = "Expert") -> dict[str, Any]:
    """One mapped event of bbb-webhooks (example/events/mapped-events.json): user-joined, user-left, ..."""
    user: dict[str, Any] = {"internal-user-id": internal_user_id, "external-user-id": external_user_id}
    if kind == "user-joined":
        user.update({"name": name, "role": "VIEWER", "presenter": "false"})
    return {"data": {"type": "event", "id": kind, "attributes": {
        "meeting": {"internal-meeting-id": "038b74cf04c0ee371f939c9e54de060753899589-1696511528029",
                    "external-meeting-id": external_meeting_id},
        "user": user}, "event": {"ts": ts_ms}}}
