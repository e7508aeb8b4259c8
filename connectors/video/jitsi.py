"""VideoProvider for self-hosted Jitsi Meet with token authentication.

Personal URLs carry a JWT that Prosody's token plugin (mod_auth_token, token/util.lib.lua, with
luajwtjitsi) accepts: header ``typ: JWT`` and the configured algorithm (HS256 with the app secret,
or RS256 with a ``kid`` that names the public key on the ASAP key server), ``iss`` = app_id,
``aud`` a string (an array would never equal an accepted audience), ``sub`` the domain or tenant,
``room`` the room name in lower case (Prosody lower-cases the MUC node and compares), and
``nbf``/``exp`` as Unix seconds, checked without leeway. ``context.user`` carries our invitation
id, which the event-sync component copies into its webhooks as ``occupant.id``.

Presence comes from jitsi-contrib's event-sync component (prosody-plugins, event_sync/
mod_event_sync_component.lua): it POSTs JSON to ``{api_prefix}/events/occupant/joined`` and
``/events/occupant/left`` with ``room_name``, ``is_breakout``, ``breakout_room_id`` and
``occupant`` {``occupant_jid``, ``id``, ``name``, ``email``, ``joined_at``, ``left_at`` (Unix
seconds)}, and to ``/events/room/created`` and ``/events/room/destroyed``. It sends the headers
configured in ``api_headers``: we expect ``Authorization: Bearer <webhook_token>``. It retries on
5xx with the same body, so a retried event gives the same dedup key. Moving into a breakout room
is reported as left (main room) and joined (breakout room) in the same second.

Jitsi rooms exist while someone is in them: create, update and end make no call.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError

from connectors.video.base import ConferenceInfo, MeetingInfo, Participant, PresenceEvent, WebhookRequest
from connectors.video.common import bearer_matches, dedup_key, seconds, stable_name, utc_from_seconds
from connectors.video.errors import VideoAuthError, VideoRejected

# Room names kept as they are: lower case (what Prosody compares), safe in a URL and a JID node.
_PLAIN_ROOM = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}")
_ALGORITHMS = ("HS256", "RS256")
_OCCUPANT_EVENTS = {
    "/events/occupant/joined": ("joined", "muc-occupant-joined", "joined_at"),
    "/events/occupant/left": ("left", "muc-occupant-left", "left_at"),
}


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # what PyJWT dumps claims with


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class HS256Signer:
    """HS256 JWTs with the key prepared once: what ``jwt.encode(claims, secret, "HS256", headers)`` gives.

    PyJWT checks and prepares the secret on every call (whether it looks like a PEM, DER, SSH or JWK
    key, which must not be used as an HMAC secret); here that check runs once, through PyJWT's own
    `HMACAlgorithm.prepare_key`, and each token costs one JSON dump and one HMAC from a keyed state.
    The header and the claims are serialised as PyJWT does (compact, header keys sorted), so the
    token is the same string.
    """

    def __init__(self, secret: str | bytes, headers: dict[str, Any] | None = None) -> None:
        algorithm = HMACAlgorithm(HMACAlgorithm.SHA256)
        key = algorithm.prepare_key(secret)
        # PyJWT 2.10 and later warn about a short secret on every encode; here once.
        short = algorithm.check_key_length(key) if hasattr(algorithm, "check_key_length") else None
        if short:
            warnings.warn(short, getattr(jwt, "InsecureKeyLengthWarning", UserWarning), stacklevel=2)
        header = {"typ": "JWT", **(headers or {}), "alg": "HS256"}
        self._prefix = _b64(json.dumps(header, separators=(",", ":"), sort_keys=True).encode()) + b"."
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def sign(self, claims: dict[str, Any]) -> str:
        return self.sign_payload(_COMPACT.encode(claims).encode())

    def sign_payload(self, payload: bytes) -> str:
        """The token for claims already serialised as `sign` serialises them."""
        signing_input = self._prefix + _b64(payload)
        mac = self._mac.copy()
        mac.update(signing_input)
        return (signing_input + b"." + _b64(mac.digest())).decode("ascii")


# Stands in for `iat` when a participant's claims are serialised ahead of time; it cannot occur
# elsewhere in the JSON (inside a string every quote is escaped).
_IAT_MARK = ',"iat":0,'
_TEMPLATES_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Template:
    """A participant's personal URL for one room and meeting time, all but its `iat`."""

    url: str  # up to and including ``?jwt=``
    head: bytes  # the claims' JSON up to ``"iat":``
    tail: bytes  # and from the comma after it


def room_name(room_key: str) -> str:
    """The Jitsi room for a meeting's room_key: lower case, URL- and JID-safe, the same every time."""
    return stable_name(room_key, _PLAIN_ROOM, prefix="fb")


class JitsiProvider:
    """Personal JWT URLs for a Jitsi Meet deployment, and its event-sync webhooks."""

    name = "jitsi"
    reports_presence = True

    def __init__(self, url: str, app_id: str, app_secret: str = "", audience: str = "", subject: str = "",
                 webhook_token: str = "", *, grace: timedelta = timedelta(minutes=30),
                 early: timedelta = timedelta(minutes=15), algorithm: str = "HS256",
                 private_key: str | None = None, kid: str | None = None) -> None:
        """`url` is the deployment's base (``https://meet.example.org``, or with a tenant path);
        tokens are valid from `early` before the start to `grace` after the end."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"video.jitsi url must be an http(s) URL without query, got {url!r}")
        for option, value in (("app_id", app_id), ("audience", audience), ("subject", subject)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"video.jitsi {option} must be a non-empty string")
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"video.jitsi algorithm must be one of {', '.join(_ALGORITHMS)}, got {algorithm!r}")
        if grace < timedelta(0) or early < timedelta(0):
            raise ValueError("video.jitsi grace and early must not be negative")
        self.url = url.rstrip("/")
        self.app_id, self.audience, self.subject = app_id, audience, subject
        self.algorithm, self.kid = algorithm, kid
        self.grace, self.early = grace, early
        self._webhook_token = webhook_token
        self._key: Any = None
        self._signer: HS256Signer | None = None
        self._templates: dict[tuple[Any, ...], _Template] = {}
        if algorithm == "HS256":
            if not app_secret:
                raise ValueError("video.jitsi app_secret is needed for HS256")
            try:
                self._signer = HS256Signer(app_secret, {"kid": kid} if kid else None)
            except InvalidKeyError as exc:
                raise ValueError(f"video.jitsi app_secret cannot be an HMAC secret: {exc}") from None
        else:
            if not private_key or not kid:
                raise ValueError("video.jitsi private_key and kid are needed for RS256")
            try:
                self._key = serialization.load_pem_private_key(private_key.encode("utf-8"), password=None)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"video.jitsi private_key is not an unencrypted PEM private key: {exc}") from None

    def _conference(self, room: str) -> ConferenceInfo:
        return ConferenceInfo(provider=self.name, provider_ref=room, host_url=f"{self.url}/{quote(room)}")

    async def create(self, meeting: MeetingInfo) -> ConferenceInfo:
        """The meeting's room (Jitsi makes it when the first person arrives): no call, always the same."""
        return self._conference(room_name(meeting.room_key))

    async def update(self, meeting: MeetingInfo, conference: ConferenceInfo) -> ConferenceInfo:
        """The same room as before; only the host URL follows a changed deployment URL."""
        self._check_ours(conference)
        return self._conference(conference.provider_ref)

    async def end(self, meeting: MeetingInfo, conference: ConferenceInfo) -> None:
        """Nothing to call: the room disappears when empty, and tokens stop working at their exp."""

    def _check_ours(self, conference: ConferenceInfo) -> None:
        if conference.provider != self.name:
            raise VideoRejected(f"conference of provider {conference.provider!r} handed to {self.name!r}")
        if not _PLAIN_ROOM.fullmatch(conference.provider_ref):
            raise VideoRejected(f"{conference.provider_ref!r} is not a room name this provider makes")

    def token(self, meeting: MeetingInfo, room: str, participant: Participant, now: datetime) -> str:
        """The participant's JWT for `room` (see the module docstring for the rules it follows)."""
        claims = self._claims(meeting, room, participant, seconds(now))
        if self._signer is not None:
            return self._signer.sign(claims)
        headers = {"typ": "JWT"}
        if self.kid:
            headers["kid"] = self.kid
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)

    def _claims(self, meeting: MeetingInfo, room: str, participant: Participant, iat: int) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": participant.invitation_id,
            "name": participant.name,
            "email": participant.email,
            "moderator": participant.moderator,
        }
        if participant.moderator:
            # Read by jitsi-contrib's token_affiliation plugin; harmless where it is not installed.
            user["affiliation"] = "owner"
        claims = {
            "iss": self.app_id,
            "aud": self.audience,
            "sub": self.subject,
            "room": room,
            "iat": iat,
            "nbf": seconds(meeting.starts_at - self.early),
            "exp": seconds(meeting.ends_at + self.grace),
            "context": {"user": user},
        }
        return claims

    def personal_url(self, meeting: MeetingInfo, conference: ConferenceInfo, participant: Participant,
                     now: datetime) -> str:
        """``{url}/{room}?jwt=TOKEN``: valid from `early` before the start until `grace` after the end."""
        if self._signer is None:
            self._check_ours(conference)
            room = conference.provider_ref
            return f"{self.url}/{quote(room)}?jwt={self.token(meeting, room, participant, now)}"
        # Everything but `iat` is the same for each of a participant's joins: their URL's template
        # is kept, keyed by all it is made of, and each join signs a token with its own `iat`.
        key = (conference.provider, conference.provider_ref, meeting.starts_at, meeting.ends_at,
               participant.invitation_id, participant.name, participant.email, participant.moderator)
        template = self._templates.get(key)
        if template is None:
            template = self._template(key, meeting, conference, participant)
        return template.url + self._signer.sign_payload(
            template.head + str(seconds(now)).encode() + template.tail)

    def _template(self, key: tuple[Any, ...], meeting: MeetingInfo, conference: ConferenceInfo,
                  participant: Participant) -> _Template:
        self._check_ours(conference)
        room = conference.provider_ref
        head, mark, tail = _COMPACT.encode(self._claims(meeting, room, participant, 0)).partition(_IAT_MARK)
        if not mark or _IAT_MARK in tail:
            raise VideoRejected("the token's claims cannot be laid out")  # not reached: the keys are fixed
        template = _Template(f"{self.url}/{quote(room)}?jwt=", (head + ',"iat":').encode(), ("," + tail).encode())
        if len(self._templates) >= _TEMPLATES_MAX:
            self._templates.clear()
        self._templates[key] = template
        return template

    def parse_webhook(self, request: WebhookRequest) -> list[PresenceEvent]:
        """Occupant joined/left events of the event-sync component; room events give []."""
        if not bearer_matches(request.headers, self._webhook_token):
            raise VideoAuthError("missing or wrong bearer token on a Jitsi event-sync webhook")
        path = "/" + request.path.strip("/")
        if path not in _OCCUPANT_EVENTS:
            # /events/room/created and /destroyed, and paths of later plugin versions: nothing to record.
            return []
        kind, event_name, time_field = _OCCUPANT_EVENTS[path]
        payload = _json_object(request.body)
        if payload.get("event_name", event_name) != event_name:
            raise VideoRejected(f"event_name {payload.get('event_name')!r} posted to {path}")
        occupant = payload.get("occupant")
        if not isinstance(occupant, dict):
            raise VideoRejected("the event has no occupant object")
        user_id = occupant.get("id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str) or not user_id:
            # No token context: a guest or a system participant, not one of our invitations.
            return []
        at = utc_from_seconds(occupant.get(time_field), f"occupant.{time_field}")
        room = payload.get("room_name") or ""
        breakout = payload.get("breakout_room_id") or "-"
        key = dedup_key(self.name, room, breakout, occupant.get("occupant_jid") or "-", user_id, kind,
                        occupant.get(time_field))
        return [PresenceEvent(invitation_id=user_id, kind=kind,  # type: ignore[arg-type]
                              at=at, dedup_key=key, source=self.name)]

    async def close(self) -> None:
        """Nothing to release."""


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise VideoRejected(f"the webhook body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise VideoRejected("the webhook body is not a JSON object")
    return payload
