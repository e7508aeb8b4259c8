"""Attacks as an outsider would try them: forged tokens, text that tries to become calendar structure or
markup, bodies too big, too deep or not UTF-8, feed paths that climb. Each gets a clean 4xx or escaped output.

Issue 5's attack table, by where each row is tested (none is repeated here):
- tests/e2e/test_auth.py: no token, garbage, expired, not yet valid (nbf), signed with another key, alg none
  on the HS256 app, HS512, another audience, another issuer, no exp, no sub, roles a number, roles missing,
  an unknown role, a viewer writing (and every secretariat endpoint refusing a viewer), HS256 signed with
  the RS256 or ES256 public key, a token of another RS256/ES256 key.
- tests/e2e/test_bad_input.py: a body over 2 MiB (413), 200,000 unclosed "[" (400), Latin-1 bytes in JSON
  (400), NUL and lone surrogates in names (422), a time zone that is a file path (422).
- tests/e2e/test_link_security.py: join tokens unknown, look-alike, revoked, expired, junk, and path
  traversal under /j/ (404 or 410); the personal link kept out of shared feeds.
- here: the rest of the token table (roles forged in the payload with the signature kept, alg none
  spelt otherwise or with a signature, a participant's join token and Jitsi token as a Bearer, claims
  of the wrong type, keys smuggled in the header, tokens outside the Authorization header, and the
  RS256 app's own attacks); CRLF and iCalendar injection through every text field into the forum, room
  and personal calendars; HTML and template syntax in every name on the participant page; 10 MB
  bodies on every kind of endpoint that reads one; nesting 100,000 deep; UTF-16, UTF-32 and malformed
  UTF-8; path traversal in feed tokens.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, NamedTuple
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from icalendar import Calendar
from markupsafe import escape

from service.app import create_app
from service.settings import Settings
from tests.conftest import VIDEO
from tests.support.http import ApiClient, token_for

MB = 1024 * 1024
READ = ("GET", "/api/v1/sites", None)
WRITE = ("POST", "/api/v1/sites", {"name": "Luleåkontoret", "city": "Luleå"})
HOOK = {"Authorization": f"Bearer {VIDEO['jitsi']['webhook_token']}"}
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def claims(settings: Settings, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "angripare", "roles": ["secretariat"], "iss": settings.auth.issuer, "aud": settings.auth.audience,
            "iat": now, "nbf": now, "exp": now + 600}
    base.update(over)
    return base


def forge_roles(token: str, *, header: dict[str, Any] | None = None, signature: str | None = None) -> str:
    """`token` with its roles changed to secretariat; the header and signature as given, else kept."""
    head, payload, sig = token.split(".")
    body = json.loads(unb64(payload))
    body["roles"] = ["secretariat"]
    new_head = b64(json.dumps(header).encode()) if header is not None else head
    return f"{new_head}.{b64(json.dumps(body).encode())}.{sig if signature is None else signature}"


def hs256(body: dict[str, Any], key: bytes, **header: Any) -> str:
    """Signed by hand: PyJWT will not sign with an empty key, an attacker will."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", **header}).encode())
    signing_input = f"{head}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def unsigned(settings: Settings, alg: str, signature: str = "") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims(settings)).encode())}.{signature}"


class Material(NamedTuple):
    """What an attacker may hold: their own viewer token and a participant's join link."""

    settings: Settings
    viewer: str
    join_url: str


@pytest.fixture
async def material(api: ApiClient, world: dict[str, Any], settings: Settings) -> Material:
    meeting = await api.ok("POST", "/api/v1/meetings", {
        "forum_id": world["forum"]["id"], "title": "Forummöte", "starts_at": "2027-04-05T09:00:00",
        "ends_at": "2027-04-05T12:00:00"})
    person = await api.ok("POST", "/api/v1/people", {"name": "Märta Åkesson", "email": "marta@region.example"})
    invitation = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                              {"person_id": person["id"], "mode": "remote"})
    return Material(settings, token_for(settings, "viewer", "läsare"), invitation["join_url"])


Token = Callable[[Material], str]
TOKEN_ATTACKS = [
    ("roles forged in a viewer token's payload, signature kept, writing",
     lambda t: forge_roles(t.viewer), WRITE, 401),
    ("roles forged in a viewer token's payload, signature kept, reading",
     lambda t: forge_roles(t.viewer), READ, 401),
    ("roles forged and the signature dropped", lambda t: forge_roles(t.viewer, signature=""), WRITE, 401),
    ("roles forged and the header switched to alg none",
     lambda t: forge_roles(t.viewer, header={"alg": "none", "typ": "JWT"}, signature=""), WRITE, 401),
    ("alg None", lambda t: unsigned(t.settings, "None"), READ, 401),
    ("alg NONE", lambda t: unsigned(t.settings, "NONE"), READ, 401),
    ("alg none with the signature of a real token",
     lambda t: unsigned(t.settings, "none", t.viewer.rsplit(".", 1)[1]), READ, 401),
    ("a participant's join token as a Bearer, reading", lambda t: t.join_url.rsplit("/", 1)[1], READ, 401),
    ("a participant's join token as a Bearer, writing", lambda t: t.join_url.rsplit("/", 1)[1], WRITE, 401),
    ("a participant's whole join URL as a Bearer", lambda t: t.join_url, READ, 401),
    ("a sub that is a number",
     lambda t: jwt.encode(claims(t.settings, sub=7), t.settings.auth.jwt_secret, "HS256"), READ, 401),
    ("roles that are an object",
     lambda t: jwt.encode(claims(t.settings, roles={"secretariat": True}), t.settings.auth.jwt_secret, "HS256"),
     WRITE, 401),
    ("roles nested in a list",
     lambda t: jwt.encode(claims(t.settings, roles=[["secretariat"]]), t.settings.auth.jwt_secret, "HS256"),
     WRITE, 403),
    ("an exp beyond the allowed clock skew",
     lambda t: jwt.encode(claims(t.settings, exp=int(time.time()) - t.settings.auth.leeway_s - 5),
                          t.settings.auth.jwt_secret, "HS256"), READ, 401),
    ("signed with an empty secret", lambda t: hs256(claims(t.settings), b""), READ, 401),
    ("a kid that names /dev/null, signed with an empty key",
     lambda t: hs256(claims(t.settings), b"", kid="../../../../dev/null"), READ, 401),
    ("an audience list that only contains another service",
     lambda t: jwt.encode(claims(t.settings, aud=["another-service"]), t.settings.auth.jwt_secret, "HS256"),
     READ, 401),
]


# Tokens are checked before the database is asked anything: one database kind is enough.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
@pytest.mark.parametrize(("make", "request_", "status"), [pytest.param(*c[1:], id=c[0]) for c in TOKEN_ATTACKS])
async def test_a_forged_or_borrowed_token_is_refused(
    client: Any, material: Material, make: Token, request_: tuple, status: int
) -> None:
    method, path, body = request_
    reply = await ApiClient(client, make(material)).send(method, path, json=body)
    assert reply.status == status, reply.raw
    assert reply.content_type == "application/problem+json"
    if status == 401:
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture
async def jitsi_token(api: ApiClient, world: dict[str, Any], client: Any) -> str:
    """The JWT in a participant's personal Jitsi URL, for a meeting going on now."""
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
    meeting = await api.ok("POST", "/api/v1/meetings", {
        "forum_id": world["forum"]["id"], "title": "Forummöte", "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(), "conference": {"provider": "jitsi"}})
    for _ in range(100):
        await api.ok("POST", "/api/v1/calendars/sync", status=200)
        if (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["conference"]["status"] == "active":
            break
        await asyncio.sleep(0.05)
    person = await api.ok("POST", "/api/v1/people", {"name": "Märta Åkesson", "email": "marta@region.example"})
    invitation = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                              {"person_id": person["id"], "mode": "remote"})
    async with client.get(urlsplit(invitation["join_url"]).path + "/join", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        [token] = parse_qs(urlsplit(resp.headers["Location"]).query)["jwt"]
    return token


@SQLITE_ONLY
async def test_a_participants_jitsi_token_is_refused_on_the_api(client: Any, jitsi_token: str) -> None:
    # Same issuer and audience names as the API's in this configuration: only the key tells them apart.
    for method, path, body in (READ, WRITE):
        reply = await ApiClient(client, jitsi_token).send(method, path, json=body)
        assert reply.status == 401, reply.raw


@SQLITE_ONLY
@pytest.mark.parametrize(("where", "status"), [
    pytest.param(lambda token: {"params": {"access_token": token}}, 401, id="in the query string"),
    pytest.param(lambda token: {"cookies": {"token": token, "access_token": token}}, 401, id="in a cookie"),
    pytest.param(lambda token: {"headers": {"Authorization": token}}, 401, id="without the Bearer scheme"),
    pytest.param(lambda token: {"headers": {"X-Authorization": f"Bearer {token}"}}, 401, id="in another header"),
])
async def test_a_good_token_anywhere_but_the_authorization_header_is_refused(
    client: Any, settings: Settings, where: Callable[[str], dict[str, Any]], status: int
) -> None:
    kw = where(token_for(settings, "secretariat"))
    async with client.get("/api/v1/sites", **kw) as resp:
        assert resp.status == status


@pytest.fixture
async def rs256(aiohttp_client: Any, settings: Settings) -> AsyncIterator[tuple[Any, Any, str]]:
    """An app that trusts only an RS256 public key: (client, the private key, the public key as PEM)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    auth = settings.auth.model_copy(update={"jwt_public_key": pem, "jwt_secret": ""})
    yield await aiohttp_client(create_app(settings.model_copy(update={"auth": auth}))), private, pem


def _own_jwk(settings: Settings, _private: Any, _pem: str) -> str:
    """Signed by the attacker's own key, which the header carries along (the embedded-jwk attack)."""
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(mine.public_key()))
    return jwt.encode(claims(settings), mine, "RS256", headers={"jwk": jwk, "jku": "http://127.0.0.1:9/keys"})


RS256_ATTACKS = [
    ("alg none", lambda s, k, p: unsigned(s, "none"), 401),
    ("HS256 signed with the public key without its final newline",
     lambda s, k, p: hs256(claims(s), p.strip().encode()), 401),
    ("HS256 signed with the public key in DER",
     lambda s, k, p: hs256(claims(s), k.public_key().public_bytes(
         serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)), 401),
    ("a key of the attacker's carried in the header", _own_jwk, 401),
    ("roles forged in a viewer token's payload, signature kept",
     lambda s, k, p: forge_roles(jwt.encode(claims(s, roles=["viewer"]), k, "RS256")), 401),
    ("a good viewer token writing", lambda s, k, p: jwt.encode(claims(s, roles=["viewer"]), k, "RS256"), 403),
]


@SQLITE_ONLY
@pytest.mark.parametrize(("make", "status"), [pytest.param(*c[1:], id=c[0]) for c in RS256_ATTACKS])
async def test_with_an_rs256_key_a_forged_token_is_refused(
    rs256: tuple[Any, Any, str], settings: Settings, make: Callable[..., str], status: int
) -> None:
    client, private, pem = rs256
    reply = await ApiClient(client, make(settings, private, pem)).send(*WRITE[:2], json=WRITE[2])
    assert reply.status == status, reply.raw


# -- text that tries to become calendar structure ------------------------------------------------------
# Each payload is put in every text field at once, with the field's name in it ({who}), so that
# whatever leaks says where it came from.
INJECTIONS = [
    pytest.param("x\r\nATTENDEE:mailto:evil-{who}@x", id="CRLF and a property"),
    pytest.param("x\nEND:VEVENT\nBEGIN:VEVENT\nUID:evil-{who}\nSUMMARY:evil", id="LF and a new event"),
    pytest.param("x\rATTENDEE;CN=evil-{who}:mailto:evil-{who}@x", id="CR and a property with a parameter"),
    pytest.param("x\r\n ATTENDEE:mailto:evil-{who}@x", id="a folded continuation line"),
    pytest.param("\";ROLE=CHAIR;CN=evil-{who}:mailto:evil-{who}@x\r\nX-EVIL:1", id="quote that ends a parameter"),
    pytest.param("x\\nATTENDEE:mailto:evil-{who}@x\\", id="escaped newline and a trailing backslash"),
    pytest.param("x\u2028ATTENDEE:mailto:evil-{who}@x\x85END:VEVENT", id="unicode line separators"),
    pytest.param("x\x0bATTENDEE:mailto:evil-{who}@x\x1cX-EVIL:1", id="vertical tab and file separator"),
]
TEXT_FIELDS = ["site.name", "site.city", "room.name", "room.equipment", "person.name", "person.organisation",
               "person.region", "forum.name", "meeting.title", "meeting.description", "session.title",
               "session.topic"]


async def everything_named(api: ApiClient, text: Callable[[str], str], mode: str = "remote") -> dict[str, Any]:
    """Site, room, person, forum, meeting, session and invitation, each text field given by `text(field)`."""
    site = await api.ok("POST", "/api/v1/sites", {"name": text("site.name"), "city": text("site.city")})
    room = await api.ok("POST", "/api/v1/rooms", {"site_id": site["id"], "name": text("room.name"),
                                                  "equipment": [text("room.equipment")]})
    person = await api.ok("POST", "/api/v1/people", {
        "name": text("person.name"), "email": "marta@region.example", "organisation": text("person.organisation"),
        "region": text("person.region")})
    forum = await api.ok("POST", "/api/v1/forums", {"name": text("forum.name"), "kind": "officials"})
    meeting = await api.ok("POST", "/api/v1/meetings", {
        "forum_id": forum["id"], "title": text("meeting.title"), "description": text("meeting.description"),
        "room_ids": [room["id"]], "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T12:00:00",
        "sessions": [{"title": text("session.title"), "topic": text("session.topic"),
                      "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T10:00:00"}]})
    invitation = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {
        "person_id": person["id"], "mode": mode, **({"site_id": site["id"]} if mode == "in_room" else {})})
    return {"room": room, "forum": forum, "meeting": meeting, "invitation": invitation}


def unfolded_lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8").replace("\r\n ", "").replace("\r\n\t", "").split("\r\n")


def assert_one_clean_event(raw: bytes, uid: str, where: str) -> None:
    lines = unfolded_lines(raw)
    assert sum(line == "BEGIN:VEVENT" for line in lines) == 1, where
    assert sum(line == "END:VEVENT" for line in lines) == 1, where
    # Every line is a property of ours: no injected name starts a line.
    leaked = [line for line in lines if line.split(":", 1)[0].split(";", 1)[0] in ("X-EVIL", "UID") and "evil" in line
              or line.startswith(("ATTENDEE:mailto:evil", "ATTENDEE;CN=evil", "SUMMARY:evil"))]
    assert leaked == [], (where, leaked)
    calendar = Calendar.from_ical(raw)
    assert [c.name for c in calendar.subcomponents if c.name != "VTIMEZONE"] == ["VEVENT"], where
    [event] = calendar.walk("VEVENT")
    assert str(event["UID"]) == uid, where
    assert "X-EVIL" not in event and "X-EVIL" not in calendar, where
    attendees = event.get("ATTENDEE", [])
    attendees = attendees if isinstance(attendees, list) else [attendees]
    # The person and the room (its address made from its names), and no address or parameter an attacker wrote.
    addresses = sorted(str(a) for a in attendees)
    assert len(addresses) == 2 and addresses[0] == "mailto:marta@region.example", (where, addresses)
    assert addresses[1].startswith("mailto:room-") and addresses[1].endswith("@example.org"), (where, addresses)
    for attendee in attendees:
        assert set(attendee.params) <= {"CN", "CUTYPE", "PARTSTAT", "ROLE", "RSVP"}, (where, attendee.params)
        assert attendee.params["ROLE"] in ("REQ-PARTICIPANT", "NON-PARTICIPANT"), (where, attendee.params)


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_text_in_any_field_never_becomes_a_property_or_an_event_in_any_calendar(
    api: ApiClient, client: Any, payload: str
) -> None:
    made = await everything_named(api, lambda who: payload.format(who=who))
    uid = made["meeting"]["uid"]
    for where, path in (("forum feed", urlsplit(made["forum"]["feed_url"]).path),
                        ("room feed", urlsplit(made["room"]["feed_url"]).path),
                        ("personal calendar", urlsplit(made["invitation"]["join_url"]).path + "/calendar.ics")):
        async with client.get(path) as resp:
            assert resp.status == 200, where
            assert_one_clean_event(await resp.read(), uid, where)


@SQLITE_ONLY
@pytest.mark.parametrize("email", ["evil@x\r\nATTENDEE:mailto:evil@x", "evil@x\nEND:VEVENT", "e vil@x.example"])
async def test_an_email_with_a_line_break_is_refused(api: ApiClient, email: str) -> None:
    code, problem = await api.post("/api/v1/people", {"name": "Märta", "email": email})
    assert code == 422 and problem["errors"][0]["field"] == "email"


# -- markup in names on the participant's page ----------------------------------------------------------
MARKUP = [
    pytest.param("<script>alert('{who}')</script>", id="script element"),
    pytest.param("\"><img src=x onerror=alert('{who}')>", id="attribute breakout"),
    pytest.param("</title><svg onload=alert('{who}')>", id="title breakout"),
    pytest.param("{{{{ 7*7 }}}} {{% raw %}} {who}", id="template syntax"),
    pytest.param("&lt;b&gt;{who}&lt;/b&gt; &amp;", id="already escaped"),
    pytest.param("javascript:alert('{who}')//<a href=x>", id="javascript URL and a link"),
]
# The fields the participant's page shows (an in-room invitation shows the site too).
SHOWN = ["site.name", "room.name", "person.name", "meeting.title", "meeting.description", "session.title",
         "session.topic"]


@pytest.mark.parametrize("payload", MARKUP)
async def test_markup_in_any_name_is_shown_escaped_on_the_participants_page(
    api: ApiClient, client: Any, payload: str
) -> None:
    made = await everything_named(api, lambda who: payload.format(who=who), mode="in_room")
    async with client.get(urlsplit(made["invitation"]["join_url"]).path, headers={"Accept-Language": "sv"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    for field in SHOWN:
        text = payload.format(who=field)
        assert str(escape(text)) in page, field
        if escape(text) != text:
            assert text not in page, field


# -- bodies too big, too deep, or not UTF-8 -------------------------------------------------------------
class Body(NamedTuple):
    method: str
    path: str  # formatted with the ids of `target`
    data: bytes | Callable[[], AsyncIterator[bytes]]
    content_type: str
    status: int | tuple[int, ...]


def ten_mb_json() -> bytes:
    return b'{"name": "' + b"x" * (10 * MB) + b'", "city": "y"}'


async def chunks() -> AsyncIterator[bytes]:
    """10 MB sent chunked: no Content-Length for the server to check up front."""
    yield b'{"name": "'
    for _ in range(10):
        yield b"x" * MB
    yield b'"}'


def nested(depth: int, open_: bytes, close: bytes) -> bytes:
    return open_ * depth + b"1" + close * depth


JSON = "application/json"
BODIES = [
    pytest.param(Body("POST", "/api/v1/meetings", ten_mb_json(), JSON, 413), id="10 MB on a create"),
    pytest.param(Body("PATCH", "/api/v1/meetings/{meeting}", ten_mb_json(), JSON, 413), id="10 MB on a change"),
    pytest.param(Body("POST", "/api/v1/sites", chunks, JSON, 413), id="10 MB chunked"),
    pytest.param(Body("POST", "/api/v1/sites", ten_mb_json(), "text/plain", (413, 415)), id="10 MB of another type"),
    pytest.param(Body("POST", "{join}/rsvp", b"answer=accepted&x=" + b"x" * (10 * MB),
                      "application/x-www-form-urlencoded", 413), id="10 MB form on the RSVP"),
    pytest.param(Body("POST", "/webhooks/jitsi/events/occupant/joined", ten_mb_json(), JSON, 413),
                 id="10 MB on a webhook"),
    pytest.param(Body("POST", "/api/v1/forums", nested(100_000, b"[", b"]"), JSON, 400), id="100,000 closed lists"),
    pytest.param(Body("POST", "/api/v1/forums", nested(100_000, b'{"a":', b"}"), JSON, 400),
                 id="100,000 nested objects"),
    pytest.param(Body("PATCH", "/api/v1/meetings/{meeting}", b'{"title": ' + nested(900, b"[", b"]") + b"}", JSON,
                      422), id="900 lists deep inside a field"),
    pytest.param(Body("POST", "/webhooks/jitsi/events/occupant/joined", nested(100_000, b"[", b"]"), JSON, 400),
                 id="100,000 lists on a webhook"),
    pytest.param(Body("POST", "/api/v1/sites", '{"name": "Luleå", "city": "Luleå"}'.encode("utf-16"), JSON, 400),
                 id="UTF-16 with a BOM"),
    pytest.param(Body("POST", "/api/v1/sites", '{"name": "Luleå", "city": "Luleå"}'.encode("utf-16-le"), JSON, 400),
                 id="UTF-16 without a BOM"),
    pytest.param(Body("POST", "/api/v1/sites", '{"name": "Luleå", "city": "Luleå"}'.encode("utf-32"), JSON, 400),
                 id="UTF-32"),
    pytest.param(Body("POST", "/api/v1/sites", b'{"name": "Lule\xc0\xaf", "city": "y"}', JSON, 400),
                 id="overlong UTF-8"),
    pytest.param(Body("POST", "/api/v1/sites", b'{"name": "Lule\xed\xa0\x80", "city": "y"}', JSON, 400),
                 id="an encoded surrogate"),
    pytest.param(Body("POST", "/api/v1/sites", b'{"name": "Lule\xf8\x88\x80\x80\x80", "city": "y"}', JSON, 400),
                 id="a five-byte sequence"),
    pytest.param(Body("POST", "/webhooks/jitsi/events/occupant/joined", b'{"occupant": "\xff\xfe"}', JSON, 400),
                 id="non-UTF-8 on a webhook"),
    pytest.param(Body("POST", "{join}/rsvp", b"answer=\xff\xfe&form_token=\xc0", "application/x-www-form-urlencoded",
                      (400, 403)), id="non-UTF-8 form on the RSVP"),
]


@pytest.fixture
async def target(api: ApiClient, world: dict[str, Any]) -> dict[str, str]:
    meeting = await api.ok("POST", "/api/v1/meetings", {
        "forum_id": world["forum"]["id"], "title": "Forummöte", "starts_at": "2027-04-05T09:00:00",
        "ends_at": "2027-04-05T12:00:00"})
    person = await api.ok("POST", "/api/v1/people", {"name": "Märta Åkesson", "email": "marta@region.example"})
    invitation = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                              {"person_id": person["id"], "mode": "remote"})
    return {"meeting": meeting["id"], "join": urlsplit(invitation["join_url"]).path}


@pytest.mark.parametrize("body", BODIES)
async def test_a_body_too_big_too_deep_or_not_utf8_gets_a_clean_4xx(
    api: ApiClient, target: dict[str, str], body: Body
) -> None:
    data = body.data() if callable(body.data) else body.data
    headers = {"Content-Type": body.content_type}
    if body.path.startswith("/webhooks/"):
        headers.update(HOOK)
    reply = await api.send(body.method, body.path.format(**target), data=data, headers=headers)
    expected = body.status if isinstance(body.status, tuple) else (body.status,)
    assert reply.status in expected, reply.raw[:500]
    if body.path.startswith(("/api/", "/webhooks/")):
        assert reply.content_type == "application/problem+json", reply.raw[:200]


@SQLITE_ONLY
@pytest.mark.parametrize(("path", "status"), [
    pytest.param("/api/v1/meetings?cursor=%ff%fe", 422, id="a query value that is not UTF-8"),
    pytest.param("/api/v1/meetings?%ff=1", 422, id="a query name that is not UTF-8"),
    pytest.param("/api/v1/meetings/%ff%fe", 404, id="a path id that is not UTF-8"),
    pytest.param("/api/v1/rooms/%c0%ae%c0%ae/busy", 404, id="an overlong dot in a path id"),
])
async def test_a_url_that_is_not_utf8_gets_a_clean_4xx(api: ApiClient, path: str, status: int) -> None:
    reply = await api.send("GET", path)
    assert reply.status == status, reply.raw[:300]


@SQLITE_ONLY
async def test_an_authorization_header_that_is_not_utf8_is_401(client: Any) -> None:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /api/v1/sites HTTP/1.1\r\nHost: forum.test\r\nAuthorization: Bearer \xff\xfe.\xc0.\x80\r\n"
                 b"Connection: close\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    assert int(status_line.split()[1]) in (400, 401)


# -- feed tokens that climb -------------------------------------------------------------------------------
async def raw_status(client: Any, target: str) -> int:
    """A request line sent exactly as written: no client normalises the dots away."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: forum.test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    return int(status_line.split()[1])


FEED_TRAVERSALS = [
    "/feeds/forums/../../etc/passwd.ics", "/feeds/forums/..%2F..%2Fetc%2Fpasswd.ics",
    "/feeds/rooms/%2e%2e%2f%2e%2e%2fetc%2fpasswd.ics", "/feeds/forums/....%2F%2F....%2F%2Fetc%2Fpasswd.ics",
    "/feeds/forums/%00.ics", "/feeds/rooms/%c0%ae%c0%ae%2fetc%2fpasswd.ics", "/feeds/forums/..%5C..%5Cwin.ini.ics",
    "/feeds/forums/{forum}%2F..%2F..%2Fapi%2Fv1%2Fsites.ics", "/feeds/rooms/{forum}.ics", "/feeds/forums/{room}.ics",
    "/feeds/forums/{forum}.ics%00", "/feeds/forums/{forum}.ics/..%2F..%2F..%2Fetc%2Fpasswd",
    "/feeds/forums/{forum}.ICS", "/feeds/forums/" + "A" * 4000 + ".ics", "/feeds/forums/.ics",
]


@SQLITE_ONLY
@pytest.mark.parametrize("template", FEED_TRAVERSALS)
async def test_a_feed_path_that_climbs_or_mixes_tokens_is_404(
    client: Any, world: dict[str, Any], api: ApiClient, template: str
) -> None:
    forum = urlsplit((await api.ok("GET", f"/api/v1/forums/{world['forum']['id']}"))["feed_url"]).path
    room = urlsplit(world["rooms"]["Tillväxten"]["feed_url"]).path
    tokens = {"forum": forum.rsplit("/", 1)[1][:-4], "room": room.rsplit("/", 1)[1][:-4]}
    assert await raw_status(client, f"/feeds/forums/{tokens['forum']}.ics") == 200
    assert await raw_status(client, template.format(**tokens)) == 404
