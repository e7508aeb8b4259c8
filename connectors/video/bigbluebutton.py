"""VideoProvider for BigBlueButton: its API (create, join, end) and the bbb-webhooks plugin.

API calls are GET ``{url}/{call}?{query}&checksum=C`` with C = hex(SHA(call + query + secret)),
where query is exactly the query string sent (BBB hashes the raw string it receives, minus the
checksum parameter) and SHA is the configured algorithm; BBB tells the algorithm by the
checksum's length (40 sha1, 64 sha256, 96 sha384, 128 sha512). Answers are XML
``<response><returncode>SUCCESS|FAILED</returncode>[<messageKey/><message/>]...</response>``.

- `create` is idempotent by meetingID: a second create with the same passwords answers SUCCESS
  with messageKey ``duplicateWarning`` and the existing meeting's createTime. The passwords are
  derived from the secret and the meetingID, so they are the same on every call without being
  stored; joins use ``role`` instead. BBB removes a meeting nobody joined after a few minutes and
  one everybody left after a minute; we ask it (meetingExpire... parameters, BBB 2.5+) to keep the
  meeting until its end plus the grace period, so that a meeting made ahead of time is still
  there and an expert who leaves and comes back finds the same meeting.
- A personal URL is a signed ``join`` with fullName, meetingID, role, userID (our invitation
  id, which the webhooks report as ``external-user-id``), createTime (so the URL only works for
  this incarnation of the meeting) and redirect=true. `provider_ref` is ``meetingID|createTime``.
  If BBB lost the meeting (a restart), `update` creates it again and returns the new createTime.
- `end` is a signed ``end``; ``notFound`` counts as ended.

Webhooks (bbb-webhooks, https://docs.bigbluebutton.org/development/webhooks, and its
callback-emitter.js): POST to the registered callback URL with ``?checksum=`` (or ``&checksum=``)
appended, body ``application/x-www-form-urlencoded`` with ``domain``, ``event`` (a JSON array of
events, or one event in older versions) and ``timestamp``; checksum = hex(SHA(callbackURL +
rawBody + secret)) where callbackURL is the URL as registered, without the checksum. The plugin's
own checksum algorithm is configured apart from the API's (sha1 unless changed), so sha1 and
sha256 are both accepted besides the configured one. With the plugin's ``auth2_0`` option it
sends ``Authorization: Bearer <secret>`` instead; that is accepted too. Register the hook with
getRaw=false: only the mapped events ``user-joined``/``user-left`` are read, from
``data.attributes.user["external-user-id"]``, ``data.attributes.meeting["external-meeting-id"]``
and ``data.event.ts`` (Unix milliseconds). Versions of the plugin before 3.0 signed a JSON
rendering of the form instead of the raw body; those are not accepted.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit
from xml.etree import ElementTree

import aiohttp
from yarl import URL

from connectors.video.base import ConferenceInfo, MeetingInfo, Participant, PresenceEvent, WebhookRequest
from connectors.video.common import bearer_matches, dedup_key, stable_name, utc_from_millis
from connectors.video.errors import VideoAuthError, VideoRejected, VideoUnavailable

ALGORITHMS: dict[str, Callable[..., Any]] = {
    "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512,
}
# How BBB and bbb-webhooks tell the algorithm of a checksum they receive.
ALGORITHM_BY_LENGTH = {40: "sha1", 64: "sha256", 96: "sha384", 128: "sha512"}
# meetingID: 2 to 256 characters, no commas (BBB 2.4+); ours stay short and plain.
_PLAIN_MEETING_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,127}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The number BBB ships in bigbluebutton.properties; it reaches nobody.
_PLACEHOLDER_DIAL_NUMBER = "613-555-1234"
_PRESENCE = {"user-joined": "joined", "user-left": "left"}


def checksum(call: str, query: str, secret: str, algorithm: str = "sha1") -> str:
    """hex(SHA(call + query + secret)): the checksum of one BBB API call."""
    return ALGORITHMS[algorithm]((call + query + secret).encode("utf-8")).hexdigest()


def query_string(params: Iterable[tuple[str, str]]) -> str:
    """The query string as sent and as hashed: form encoding, spaces as '+', in the given order."""
    return urlencode(list(params), quote_via=quote_plus)


def webhook_checksum(callback_url: str, body: bytes, secret: str, algorithm: str = "sha1") -> str:
    """hex(SHA(callbackURL + raw body + secret)): what bbb-webhooks appends to the callback URL."""
    return ALGORITHMS[algorithm](callback_url.encode("utf-8") + body + secret.encode("utf-8")).hexdigest()


def without_checksum(url: str) -> str:
    """`url` with its checksum parameter taken out, the rest of it byte for byte as it was."""
    base, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [part for part in query.split("&") if not part.startswith("checksum=")]
    return base + ("?" + "&".join(kept) if kept else "")


def meeting_id_for(room_key: str) -> str:
    """The BBB meetingID for a meeting's room_key: the key when it is plain, else a hash of it."""
    return stable_name(room_key, _PLAIN_MEETING_ID, prefix="fb")


def _clip_utf16(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 code units (BBB measures lengths in Java chars)."""
    out, used = [], 0
    for ch in text:
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            break
        out.append(ch)
    return "".join(out)


def _clean(text: str) -> str:
    """Control characters removed (BBB strips them from the query and then the checksum fails)."""
    return " ".join(_CONTROL.sub(" ", text).split())


def parse_ref(provider_ref: str) -> tuple[str, str]:
    """(meetingID, createTime) from a provider_ref ``meetingID|createTime``."""
    meeting_id, sep, create_time = provider_ref.rpartition("|")
    if not sep or not meeting_id or not create_time.isdigit():
        raise VideoRejected(f"{provider_ref!r} is not a BigBlueButton reference (meetingID|createTime)")
    return meeting_id, create_time


class BigBlueButtonProvider:
    """Conferences as BBB meetings, personal signed join URLs, and bbb-webhooks presence events."""

    name = "bigbluebutton"
    reports_presence = True

    def __init__(self, url: str, secret: str, checksum: str = "sha256", *,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None, timeout: float = 10.0,
                 grace: timedelta = timedelta(minutes=30), webhook_checksums: Sequence[str] = ("sha1", "sha256"),
                 callback_url: str | None = None, end_callback_url: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        """`url` is the API base (``https://bbb.example.org/bigbluebutton/api``).

        `session_factory` makes the HTTP session on first use (the provider closes it in
        `close`); by default a plain `aiohttp.ClientSession`. `callback_url` is the webhook URL
        exactly as registered with bbb-webhooks, for when a proxy changes what the service sees
        (scheme, host); by default the URL as received. `end_callback_url` is sent as
        ``meta_endCallbackUrl`` (``{meeting_id}`` is replaced by our meeting id).
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError(f"video.bigbluebutton url must be an http(s) URL without query, got {url!r}")
        if not secret:
            raise ValueError("video.bigbluebutton secret must not be empty")
        if checksum not in ALGORITHMS:
            raise ValueError(f"video.bigbluebutton checksum must be one of {', '.join(ALGORITHMS)}, got {checksum!r}")
        unknown = set(webhook_checksums) - set(ALGORITHMS)
        if unknown:
            raise ValueError(f"video.bigbluebutton webhook_checksums: unknown {', '.join(sorted(unknown))}")
        if timeout <= 0 or grace < timedelta(0):
            raise ValueError("video.bigbluebutton timeout must be positive and grace not negative")
        self.url = url.rstrip("/")
        self._secret = secret
        self.checksum_algorithm = checksum
        self.webhook_algorithms = frozenset(webhook_checksums) | {checksum}
        self.timeout = timeout
        self.grace = grace
        self.callback_url = callback_url
        self.end_callback_url = end_callback_url
        self._clock = clock
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None

    # --- the API -------------------------------------------------------------------------------

    def signed_url(self, call: str, params: Sequence[tuple[str, str]]) -> str:
        """``{url}/{call}?{query}&checksum=...`` for `params` in their order."""
        query = query_string(params)
        sig = checksum(call, query, self._secret, self.checksum_algorithm)
        return f"{self.url}/{call}?{query}{'&' if query else ''}checksum={sig}"

    def _passwords(self, meeting_id: str) -> tuple[str, str]:
        """(attendeePW, moderatorPW): derived, so every create for a meeting sends the same ones."""
        def derive(role: str) -> str:
            return hmac.new(self._secret.encode("utf-8"), f"{role}|{meeting_id}".encode("utf-8"),
                            hashlib.sha256).hexdigest()[:20]
        return derive("attendee"), derive("moderator")

    async def _call(self, call: str, params: Sequence[tuple[str, str]]) -> ElementTree.Element:
        """One API call; the SUCCESS answer's root, or the error it means."""
        try:
            # encoded=True: the query must reach BBB exactly as it was hashed, not re-quoted.
            url = URL(self.signed_url(call, params), encoded=True)
        except ValueError as exc:
            raise VideoRejected(f"BigBlueButton {call}: unusable URL: {exc}") from None
        if self._session is None or self._session.closed:
            self._session = self._session_factory() if self._session_factory else aiohttp.ClientSession()
        try:
            async with self._session.get(url, allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                status, reason = resp.status, resp.reason
                body = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise VideoUnavailable(f"BigBlueButton {call}: {type(exc).__name__}: {exc}") from exc
        if status in (408, 429) or status >= 500:
            raise VideoUnavailable(f"BigBlueButton {call}: {status} {reason}", status=status)
        if status in (401, 403):
            raise VideoAuthError(f"BigBlueButton {call}: {status} {reason}", status=status)
        if status != 200:
            raise VideoRejected(f"BigBlueButton {call}: {status} {reason}", status=status)
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as exc:
            # Something between us and BBB answered (a proxy's HTML page): not BBB's word.
            raise VideoUnavailable(f"BigBlueButton {call}: the answer is not XML ({exc})", status=status) from exc
        returncode = (root.findtext("returncode") or "").strip().upper()
        if root.tag != "response" or returncode not in ("SUCCESS", "FAILED"):
            raise VideoUnavailable(f"BigBlueButton {call}: the answer is not an API response", status=status)
        if returncode == "SUCCESS":
            return root
        key = (root.findtext("messageKey") or "").strip()
        message = (root.findtext("message") or "").strip()
        text = f"BigBlueButton {call}: {key or 'FAILED'}: {message}"
        if key == "checksumError":
            raise VideoAuthError(text + " (is the secret or the checksum algorithm right?)", key=key)
        raise VideoRejected(text, key=key)

    def _expiry_minutes(self, meeting: MeetingInfo) -> str:
        left = meeting.ends_at + self.grace - self._clock()
        return str(max(1, math.ceil(left.total_seconds() / 60)))

    async def create(self, meeting: MeetingInfo) -> ConferenceInfo:
        """Create the BBB meeting, or find it (duplicateWarning); its createTime goes into provider_ref."""
        meeting_id = meeting_id_for(meeting.room_key)
        attendee_pw, moderator_pw = self._passwords(meeting_id)
        name = _clip_utf16(_clean(meeting.title), 64)
        if len(name) < 2:
            name = (name + " " + meeting_id)[:64]
        keep = self._expiry_minutes(meeting)
        params = [
            ("name", name), ("meetingID", meeting_id),
            ("attendeePW", attendee_pw), ("moderatorPW", moderator_pw),
            ("record", "false"),
            ("meetingExpireIfNoUserJoinedInMinutes", keep),
            ("meetingExpireWhenLastUserLeftInMinutes", keep),
        ]
        if self.end_callback_url:
            params.append(("meta_endCallbackUrl", self.end_callback_url.replace("{meeting_id}", meeting.meeting_id)))
        try:
            root = await self._call("create", params)
        except VideoRejected as exc:
            if exc.key == "idNotUnique":
                raise VideoRejected(f"{exc} (a meeting {meeting_id!r} exists with other passwords: "
                                    "made with another secret?)", key=exc.key) from None
            raise
        create_time = (root.findtext("createTime") or "").strip()
        if not create_time.isdigit():
            raise VideoUnavailable("BigBlueButton create: the answer has no createTime")
        return ConferenceInfo(provider=self.name, provider_ref=f"{meeting_id}|{create_time}",
                              host_url=None, sip_uri=None, dial_in=_dial_in(root))

    async def update(self, meeting: MeetingInfo, conference: ConferenceInfo) -> ConferenceInfo:
        """Make sure the meeting exists (create is idempotent); a lost meeting comes back with a new
        createTime. BBB cannot rename a meeting, so a new title shows only in a re-made meeting."""
        self._check_ours(conference)
        return await self.create(meeting)

    async def end(self, meeting: MeetingInfo, conference: ConferenceInfo) -> None:
        """Signed ``end``; a meeting BBB no longer knows (notFound) counts as ended."""
        self._check_ours(conference)
        meeting_id, _ = parse_ref(conference.provider_ref)
        _, moderator_pw = self._passwords(meeting_id)
        try:
            await self._call("end", [("meetingID", meeting_id), ("password", moderator_pw)])
        except VideoRejected as exc:
            if exc.key != "notFound":
                raise

    def _check_ours(self, conference: ConferenceInfo) -> None:
        if conference.provider != self.name:
            raise VideoRejected(f"conference of provider {conference.provider!r} handed to {self.name!r}")

    def personal_url(self, meeting: MeetingInfo, conference: ConferenceInfo, participant: Participant,
                     now: datetime) -> str:
        """A signed ``join`` URL for this participant and this incarnation of the meeting (createTime)."""
        self._check_ours(conference)
        meeting_id, create_time = parse_ref(conference.provider_ref)
        full_name = _clip_utf16(_clean(participant.name) or _clean(participant.email) or "Participant", 200)
        return self.signed_url("join", [
            ("fullName", full_name),
            ("meetingID", meeting_id),
            ("role", "MODERATOR" if participant.moderator else "VIEWER"),
            ("userID", participant.invitation_id),
            ("createTime", create_time),
            ("redirect", "true"),
        ])

    # --- webhooks ------------------------------------------------------------------------------

    def _verify_webhook(self, request: WebhookRequest) -> None:
        query = urlsplit(request.url).query
        sums = parse_qs(query, keep_blank_values=True).get("checksum", [])
        if not sums:
            if bearer_matches(request.headers, self._secret):
                return
            raise VideoAuthError("a BigBlueButton webhook without checksum or bearer token")
        if len(sums) != 1:
            raise VideoAuthError("a BigBlueButton webhook with more than one checksum")
        received = sums[0].strip().lower()
        algorithm = ALGORITHM_BY_LENGTH.get(len(received))
        if algorithm not in self.webhook_algorithms:
            raise VideoAuthError(f"a BigBlueButton webhook checksum of length {len(received)} is not accepted")
        callback = self.callback_url or without_checksum(request.url)
        expected = webhook_checksum(callback, request.body, self._secret, algorithm)
        if not hmac.compare_digest(expected.encode("ascii"), received.encode("ascii", "replace")):
            raise VideoAuthError("wrong checksum on a BigBlueButton webhook")

    def parse_webhook(self, request: WebhookRequest) -> list[PresenceEvent]:
        """``user-joined``/``user-left`` of users who came through a personal URL; other events give []."""
        self._verify_webhook(request)
        try:
            form = parse_qs(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as exc:
            raise VideoRejected(f"the webhook body is not UTF-8: {exc}") from None
        raw_events = form.get("event")
        if not raw_events:
            raise VideoRejected("the webhook body has no event field")
        try:
            decoded = json.loads(raw_events[0])
        except (ValueError, RecursionError) as exc:
            raise VideoRejected(f"the webhook's event field is not JSON: {exc}") from None
        items = decoded if isinstance(decoded, list) else [decoded]
        events: list[PresenceEvent] = []
        for item in items:
            event = _presence(item)
            if event is not None:
                events.append(event)
        return events

    async def close(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                await session.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _dial_in(root: ElementTree.Element) -> str | None:
    number = (root.findtext("dialNumber") or "").strip()
    pin = (root.findtext("voiceBridge") or "").strip()
    if not number or number == _PLACEHOLDER_DIAL_NUMBER:
        return None
    return f"{number}, PIN {pin}" if pin else number


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VideoRejected(f"{what} is not an object")
    return value


def _presence(item: Any) -> PresenceEvent | None:
    """One mapped bbb-webhooks event as a presence event, or None when it is not one we record."""
    data = _object(_object(item, "an event").get("data"), "event.data")
    event_id = data.get("id")
    kind = _PRESENCE.get(event_id) if isinstance(event_id, str) else None
    if kind is None:
        return None
    attributes = _object(data.get("attributes"), "data.attributes")
    user = _object(attributes.get("user"), "data.attributes.user")
    meeting = _object(attributes.get("meeting", {}), "data.attributes.meeting")
    external = user.get("external-user-id")
    internal = user.get("internal-user-id")
    if not isinstance(external, str) or not external or external == internal:
        # Without our userID BBB reports its own internal id: not one of our invitations.
        return None
    ts = _object(data.get("event"), "data.event").get("ts")
    at = utc_from_millis(ts, "data.event.ts")
    key = dedup_key(BigBlueButtonProvider.name, meeting.get("external-meeting-id") or "-", internal or "-",
                    external, kind, ts)
    return PresenceEvent(invitation_id=external, kind=kind, at=at, dedup_key=key,  # type: ignore[arg-type]
                         source=BigBlueButtonProvider.name)


__all__ = [
    "BigBlueButtonProvider", "checksum", "query_string", "webhook_checksum", "without_checksum",
    "meeting_id_for", "parse_ref", "ALGORITHMS", "ALGORITHM_BY_LENGTH",
]
