"""Jitsi: personal tokens checked by Jitsi's own rules, and event-sync webhooks."""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.video import (
    ConferenceInfo,
    JitsiProvider,
    MeetingInfo,
    Participant,
    VideoAuthError,
    VideoProvider,
    VideoRejected,
    WebhookRequest,
    make_provider,
)
from connectors.video.jitsi import room_name
from tests.support.jitsi_verifier import JitsiTokenVerifier, TokenRefused

SECRET = "jitsi-app-secret-" + "0123456789abcdef" * 3
HOOK_TOKEN = "event-sync-token-4f1c9a"
DOMAIN = "meet.example.org"
START = datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)   # 09:00 in Stockholm
END = datetime(2027, 4, 5, 10, 0, tzinfo=timezone.utc)
INVITATION = "6f1d2c3b-0a9e-4b8c-9d7e-1f2a3b4c5d6e"


def meeting(room_key: str = "forum-0b5e6c1e8f0c4b7e9a57") -> MeetingInfo:
    return MeetingInfo(meeting_id="0b5e6c1e-8f0c-4b7e-9a57-1f0f2b3c4d5e", title="Forummöte", starts_at=START,
                       ends_at=END, room_key=room_key, forum_id="f-1", room_video_endpoint=None)


def expert(moderator: bool = False) -> Participant:
    return Participant(invitation_id=INVITATION, name="Åsa Öberg", email="asa.oberg@region.example",
                       moderator=moderator)


def provider(**kw: object) -> JitsiProvider:
    options: dict[str, object] = dict(url=f"https://{DOMAIN}", app_id="forumbridge", app_secret=SECRET,
                                      audience="forumbridge", subject=DOMAIN, webhook_token=HOOK_TOKEN)
    options.update(kw)
    return JitsiProvider(**options)  # type: ignore[arg-type]


def verifier(**kw: object) -> JitsiTokenVerifier:
    options: dict[str, object] = dict(app_id="forumbridge", domain=DOMAIN, app_secret=SECRET,
                                      accepted_audiences=["forumbridge"])
    options.update(kw)
    return JitsiTokenVerifier(**options)  # type: ignore[arg-type]


def split(url: str) -> tuple[str, str]:
    """(room as in the URL path, token) of a personal URL."""
    parts = urlsplit(url)
    return parts.path.lstrip("/"), parse_qs(parts.query)["jwt"][0]


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def personal(p: JitsiProvider | None = None, who: Participant | None = None,
                   m: MeetingInfo | None = None) -> tuple[str, str]:
    p = p or provider()
    m = m or meeting()
    conference = await p.create(m)
    return split(p.personal_url(m, conference, who or expert(), START - timedelta(days=2)))


# --- tokens ----------------------------------------------------------------------------------

async def test_a_personal_url_lets_the_participant_into_the_meetings_room():
    p = provider()
    conference = await p.create(meeting())
    url = p.personal_url(meeting(), conference, expert(), START - timedelta(days=2))
    room, token = split(url)

    assert url == f"https://{DOMAIN}/{room}?jwt={token}"
    assert room == conference.provider_ref == room.lower()
    claims = verifier().admit(token, room, now=START.timestamp())
    assert claims["room"] == room and claims["sub"] == DOMAIN and claims["aud"] == "forumbridge"
    assert claims["context"]["user"] == {"id": INVITATION, "name": "Åsa Öberg",
                                         "email": "asa.oberg@region.example", "moderator": False}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}


async def test_the_token_works_from_shortly_before_the_start_until_the_grace_period_ends():
    room, token = await personal()
    claims = verifier().verify_token(token, now=START.timestamp())
    assert claims["nbf"] == (START - timedelta(minutes=15)).timestamp()
    assert claims["exp"] == (END + timedelta(minutes=30)).timestamp()
    for moment in (claims["nbf"], START.timestamp(), END.timestamp(), claims["exp"] - 1):
        verifier().admit(token, room, now=moment)


async def test_a_moderator_is_marked_as_one_in_the_token():
    room, token = await personal(who=expert(moderator=True))
    user = verifier().admit(token, room, now=START.timestamp())["context"]["user"]
    assert user["moderator"] is True and user["affiliation"] == "owner"


def _alg_none(token: str) -> str:
    header, body, _ = token.split(".")
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{body}."


def _resigned(token: str, **changes: object) -> str:
    """The same claims with `changes`, signed correctly with the app secret."""
    claims = {**_claims(token), **changes}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "JWT"})


T0 = START.timestamp()


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _forged(token: str) -> str:
    """The claims changed to every room, the original signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{b64({**_claims(token), 'room': '*'})}.{signature}"


# (how, the reason Prosody would log, the check)
REFUSALS: list[tuple[str, str, Callable[[str, str], object]]] = [
    ("expired", "by exp", lambda t, r: verifier().admit(t, r, now=(END + timedelta(minutes=30)).timestamp())),
    ("long expired", "by exp", lambda t, r: verifier().admit(t, r, now=(END + timedelta(days=1)).timestamp())),
    ("not yet valid", "by nbf",
     lambda t, r: verifier().admit(t, r, now=(START - timedelta(minutes=15, seconds=1)).timestamp())),
    ("another room", "used to join", lambda t, r: verifier().admit(t, "forum-ffffffffffffffffffff", now=T0)),
    ("another secret", "Invalid signature", lambda t, r: verifier(app_secret=SECRET + "x").admit(t, r, now=T0)),
    ("another audience", "audience", lambda t, r: verifier(accepted_audiences=["other-app"]).admit(t, r, now=T0)),
    ("another issuer", "issuer", lambda t, r: verifier(app_id="other-app").admit(t, r, now=T0)),
    ("another domain", "used to join", lambda t, r: verifier(domain="meet.other.example").admit(t, r, now=T0)),
    ("alg none", "Invalid token", lambda t, r: verifier().admit(_alg_none(t), r, now=T0)),
    ("alg HS512", "incorrect alg",
     lambda t, r: verifier().admit(jwt.encode(_claims(t), SECRET, algorithm="HS512"), r, now=T0)),
    ("no typ", "Invalid typ", lambda t, r: verifier().admit(
        jwt.encode(_claims(t), SECRET, algorithm="HS256", headers={"typ": None}), r, now=T0)),
    ("aud as a list", "audience", lambda t, r: verifier().admit(_resigned(t, aud=["forumbridge"]), r, now=T0)),
    ("room missing", "'room' claim is missing", lambda t, r: verifier().admit(_resigned(t, room=None), r, now=T0)),
    ("tampered claims", "Invalid signature", lambda t, r: verifier().admit(_forged(t), r, now=T0)),
]


@pytest.mark.parametrize("how, reason, check", REFUSALS, ids=[how for how, _, _ in REFUSALS])
async def test_jitsi_refuses_the_token_when(how, reason, check):
    room, token = await personal()
    with pytest.raises(TokenRefused, match=re.escape(reason)):
        check(token, room)


async def test_the_verifier_really_compares_the_room_in_lower_case():
    room, token = await personal()
    verifier().admit(token, room.upper(), now=START.timestamp())  # Prosody lower-cases the MUC node
    verifier(enable_domain_verification=False).admit(token, room.upper(), now=START.timestamp())


async def test_rs256_tokens_carry_the_kid_and_pass_with_the_public_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    p = provider(algorithm="RS256", app_secret="", private_key=pem, kid="forumbridge/2027")
    room, token = await personal(p)

    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT", "kid": "forumbridge/2027"}
    rs = verifier(signature_algorithm="RS256", app_secret=None, public_key_pem=public)
    rs.admit(token, room, now=START.timestamp())
    with pytest.raises(TokenRefused):
        verifier().admit(token, room, now=START.timestamp())  # an HS256 deployment refuses it


@pytest.mark.parametrize("room_key, plain", [
    ("forum-0b5e6c1e8f0c4b7e9a57", True),
    ("Forum-0B5E", False),
    ("forum/../x", False),
    ("möte", False),
    ("a" * 80, False),
])
def test_room_names_are_lower_case_url_safe_and_stable(room_key, plain):
    name = room_name(room_key)
    assert name == room_name(room_key)
    assert (name == room_key) is plain
    assert name == name.lower() and name.replace("-", "").replace("_", "").isalnum() and len(name) <= 64


async def test_conferences_need_no_call_and_keep_their_room():
    p = provider()
    first = await p.create(meeting())
    assert first == await p.create(meeting())
    assert first == ConferenceInfo("jitsi", room_name(meeting().room_key), f"https://{DOMAIN}/{first.provider_ref}")
    moved = MeetingInfo(**{**meeting().__dict__, "title": "Nytt namn", "starts_at": START + timedelta(days=1),
                           "ends_at": END + timedelta(days=1)})
    assert await p.update(moved, first) == first
    await p.end(moved, first)


async def test_a_conference_of_another_provider_is_refused():
    with pytest.raises(VideoRejected):
        provider().personal_url(meeting(), ConferenceInfo("bigbluebutton", "x|1"), expert(), START)


def test_the_provider_is_a_video_provider_and_reports_presence():
    p = provider()
    assert isinstance(p, VideoProvider) and p.reports_presence and p.name == "jitsi"


@pytest.mark.parametrize("changes, option", [
    ({"url": "meet.example.org"}, "url"),
    ({"app_secret": ""}, "app_secret"),
    ({"audience": ""}, "audience"),
    ({"algorithm": "none"}, "algorithm"),
    ({"algorithm": "RS256", "private_key": None, "kid": None}, "private_key"),
    ({"algorithm": "RS256", "private_key": "not a key", "kid": "k"}, "private_key"),
])
def test_a_wrong_configuration_is_named(changes, option):
    with pytest.raises(ValueError, match=option):
        provider(**changes)


# --- event-sync webhooks ----------------------------------------------------------------------

JOINED = {  # the shape of jitsi-contrib/prosody-plugins event_sync README, with our token's user
    "event_name": "muc-occupant-joined",
    "room_name": "forum-0b5e6c1e8f0c4b7e9a57",
    "room_jid": "forum-0b5e6c1e8f0c4b7e9a57@conference.meet.example.org",
    "is_breakout": False,
    "active_occupants_count": 4,
    "occupant": {
        "name": "Åsa Öberg",
        "email": "asa.oberg@region.example",
        "id": INVITATION,
        "occupant_jid": "14f01c40-5195-4a4d-8efb-f58b49d18741@meet.example.org/OWhl8jSh",
        "joined_at": 1806908400,
    },
}
LEFT = {**JOINED, "event_name": "muc-occupant-left", "active_occupants_count": 3,
        "occupant": {**JOINED["occupant"], "left_at": 1806912000}}


def hook(path: str, payload: object, headers: dict[str, str] | None = None) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return WebhookRequest(path=path, body=body, url=f"https://forum.example/webhooks/jitsi{path}",
                          headers={"Content-Type": "application/json",
                                   "Authorization": f"Bearer {HOOK_TOKEN}"} if headers is None else headers)


def test_a_join_and_a_leave_become_presence_events_of_the_invitation():
    p = provider()
    [joined] = p.parse_webhook(hook("/events/occupant/joined", JOINED))
    [left] = p.parse_webhook(hook("/events/occupant/left", LEFT))
    assert (joined.invitation_id, joined.kind, joined.at, joined.source) == (
        INVITATION, "joined", datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc), "jitsi")
    assert (left.invitation_id, left.kind, left.at) == (
        INVITATION, "left", datetime(2027, 4, 5, 8, 0, tzinfo=timezone.utc))


def test_a_repeated_event_has_the_same_dedup_key_and_other_events_other_keys():
    p = provider()
    key = p.parse_webhook(hook("/events/occupant/joined", JOINED))[0].dedup_key
    assert p.parse_webhook(hook("/events/occupant/joined", JOINED))[0].dedup_key == key
    others = [
        p.parse_webhook(hook("/events/occupant/left", LEFT))[0].dedup_key,
        p.parse_webhook(hook("/events/occupant/joined", {
            **JOINED, "occupant": {**JOINED["occupant"], "joined_at": 1806909000}}))[0].dedup_key,
        p.parse_webhook(hook("/events/occupant/joined", {
            **JOINED, "occupant": {**JOINED["occupant"], "occupant_jid": "other@meet.example.org/x"}}))[0].dedup_key,
        p.parse_webhook(hook("/events/occupant/joined", {
            **JOINED, "is_breakout": True, "breakout_room_id": "b1"}))[0].dedup_key,
    ]
    assert len({key, *others}) == 5
    assert all(len(k) <= 255 for k in others)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {HOOK_TOKEN}x"},
    {"Authorization": f"Basic {HOOK_TOKEN}"},
    {"Authorization": HOOK_TOKEN},
    {"X-Token": HOOK_TOKEN},
], ids=["none", "empty", "wrong", "longer", "basic", "no scheme", "other header"])
def test_a_webhook_without_the_right_bearer_token_is_refused(headers):
    with pytest.raises(VideoAuthError):
        provider().parse_webhook(hook("/events/occupant/joined", JOINED, headers))


def test_the_token_is_checked_before_the_body_is_read():
    with pytest.raises(VideoAuthError):
        provider().parse_webhook(hook("/events/occupant/joined", b"not json", {"Authorization": "Bearer x"}))


def test_without_a_configured_token_every_webhook_is_refused():
    with pytest.raises(VideoAuthError):
        provider(webhook_token="").parse_webhook(hook("/events/occupant/joined", JOINED, {"Authorization": "Bearer "}))


def test_header_names_and_the_scheme_are_not_case_sensitive():
    events = provider().parse_webhook(hook("/events/occupant/joined", JOINED,
                                           {"authorization": f"bearer {HOOK_TOKEN}"}))
    assert len(events) == 1


@pytest.mark.parametrize("path, payload", [
    ("/events/room/created", {"event_name": "muc-room-created", "room_name": "x", "created_at": 1806908400}),
    ("/events/room/destroyed", {"event_name": "muc-room-destroyed", "room_name": "x", "all_occupants": []}),
    ("/events/occupant/joined", {**JOINED, "occupant": {k: v for k, v in JOINED["occupant"].items() if k != "id"}}),
    ("/events/something/new", {"event_name": "new"}),
], ids=["room created", "room destroyed", "guest without token", "unknown path"])
def test_events_that_are_not_ours_to_record_give_nothing(path, payload):
    assert provider().parse_webhook(hook(path, payload)) == []


@pytest.mark.parametrize("path, payload", [
    ("/events/occupant/joined", b"{not json"),
    ("/events/occupant/joined", b"\xff\xfe"),
    ("/events/occupant/joined", [JOINED]),
    ("/events/occupant/joined", {**JOINED, "occupant": "x"}),
    ("/events/occupant/joined", {k: v for k, v in JOINED.items() if k != "occupant"}),
    ("/events/occupant/joined", {**JOINED, "occupant": {**JOINED["occupant"], "joined_at": None}}),
    ("/events/occupant/joined", {**JOINED, "occupant": {**JOINED["occupant"], "joined_at": "1806908400"}}),
    ("/events/occupant/joined", {**JOINED, "occupant": {**JOINED["occupant"], "joined_at": 1806908400000}}),
    ("/events/occupant/joined", {**JOINED, "occupant": {**JOINED["occupant"], "joined_at": True}}),
    ("/events/occupant/left", {**LEFT, "occupant": {k: v for k, v in LEFT["occupant"].items() if k != "left_at"}}),
    ("/events/occupant/left", JOINED),
], ids=["not json", "not utf-8", "array", "occupant not object", "no occupant", "no time", "time as text",
        "milliseconds", "boolean time", "left without left_at", "joined posted to left"])
def test_a_malformed_event_is_rejected(path, payload):
    with pytest.raises(VideoRejected):
        provider().parse_webhook(hook(path, payload))


def test_the_provider_is_built_from_its_config_section():
    p = make_provider("jitsi", {"url": f"https://{DOMAIN}", "app_id": "forumbridge", "app_secret": SECRET,
                                "audience": "forumbridge", "subject": DOMAIN, "webhook_token": HOOK_TOKEN,
                                "grace_minutes": "45", "early_minutes": 10})
    assert isinstance(p, JitsiProvider)
    assert (p.grace, p.early) == (timedelta(minutes=45), timedelta(minutes=10))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=5),
                    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["/events/occupant/joined", "/events/occupant/left", "/events/room/created", ""]),
       st.one_of(JSON, st.fixed_dictionaries({"occupant": st.dictionaries(
           st.sampled_from(["id", "joined_at", "left_at", "occupant_jid"]), JSON)})))
def test_any_authenticated_body_gives_events_or_a_rejection_and_nothing_else(path, payload):
    try:
        events = provider().parse_webhook(hook(path, payload))
    except VideoRejected:
        return
    assert all(e.invitation_id and e.at.tzinfo is not None for e in events)


@pytest.mark.parametrize("kid", [None, "forumbridge/2027"])
@given(name=st.text(max_size=40), email=st.text(max_size=40), moderator=st.booleans())
@settings(max_examples=30, deadline=None)
def test_hs256_tokens_are_what_pyjwt_makes_and_decode_to_the_same_claims(kid, name, email, moderator):
    p = provider(kid=kid)
    who = Participant(invitation_id=INVITATION, name=name, email=email, moderator=moderator)
    token = p.token(meeting(), "forum-room", who, START)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="forumbridge",
                        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    headers = {"typ": "JWT", **({"kid": kid} if kid else {})}
    assert token == jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)
    assert claims["context"]["user"] == {"id": INVITATION, "name": name, "email": email, "moderator": moderator,
                                         **({"affiliation": "owner"} if moderator else {})}
    assert jwt.get_unverified_header(token) == {"alg": "HS256", **headers}


@pytest.mark.parametrize("secret", [
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bench@example",
    '{"kty": "oct", "k": "c2VjcmV0"}',
])
def test_an_hs256_secret_that_is_a_public_key_or_a_jwk_is_refused_when_configured(secret):
    with pytest.raises(ValueError, match="app_secret"):
        provider(app_secret=secret)


def decoded(url: str) -> dict:
    return jwt.decode(split(url)[1], SECRET, algorithms=["HS256"], audience="forumbridge",
                      options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})


async def test_each_personal_url_is_signed_at_its_own_time_and_follows_what_it_is_made_of():
    p = provider()
    m = meeting()
    conference = await p.create(m)
    first = p.personal_url(m, conference, expert(), START - timedelta(hours=1))
    later = p.personal_url(m, conference, expert(), START + timedelta(minutes=5))
    assert decoded(first)["iat"] == int((START - timedelta(hours=1)).timestamp())
    assert decoded(later)["iat"] == int((START + timedelta(minutes=5)).timestamp())
    # The same as a URL made from scratch by a provider that has made none before.
    assert later == provider().personal_url(m, conference, expert(), START + timedelta(minutes=5))
    renamed = Participant(invitation_id=INVITATION, name="Åsa Öberg-Lind", email="asa.lind@region.example")
    assert decoded(p.personal_url(m, conference, renamed, START))["context"]["user"] == {
        "id": INVITATION, "name": "Åsa Öberg-Lind", "email": "asa.lind@region.example", "moderator": False}
    assert decoded(p.personal_url(m, conference, expert(moderator=True), START))["context"]["user"]["moderator"] is True
    moved = MeetingInfo(meeting_id=m.meeting_id, title=m.title, starts_at=START + timedelta(days=1),
                        ends_at=END + timedelta(days=1), room_key=m.room_key, forum_id=m.forum_id)
    assert decoded(p.personal_url(moved, conference, expert(), START))["exp"] == \
        int((END + timedelta(days=1, minutes=30)).timestamp())
    with pytest.raises(VideoRejected):
        p.personal_url(m, ConferenceInfo("jitsi", "Not A Room!"), expert(), START)
