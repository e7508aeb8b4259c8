"""Bearer tokens: who may read, who may write, and what a bad token gets."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.app import create_app
from service.http.routes import v1
from service.settings import Settings
from tests.support.http import ApiClient

SITE = {"name": "Luleåkontoret", "city": "Luleå"}
# The HS512 case signs with the app's 43-byte secret, short for SHA-512: that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def claims(settings: Settings, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "tester", "roles": ["secretariat"], "iss": settings.auth.issuer, "aud": settings.auth.audience,
            "iat": now, "nbf": now, "exp": now + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not ...}


def signed(**over: Any) -> Callable[[Settings], str]:
    return lambda s: jwt.encode(claims(s, **over), s.auth.jwt_secret, algorithm="HS256")


NONE = json.dumps({"alg": "none", "typ": "JWT"}).encode()
HS256 = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unsigned(s: Settings) -> str:
    """An `alg: none` token: no signature at all."""
    return f"{_b64(NONE)}.{_b64(json.dumps(claims(s)).encode())}."


READ = ("GET", "/api/v1/sites", None)
WRITE = ("POST", "/api/v1/sites", SITE)

CASES = [
    ("no token", lambda s: None, READ, 401),
    ("a garbage token", lambda s: "garbage", READ, 401),
    ("three garbage parts", lambda s: "a.b.c", READ, 401),
    ("an expired token", signed(exp=int(time.time()) - 3600), READ, 401),
    ("a token not valid yet", signed(nbf=int(time.time()) + 3600), READ, 401),
    ("a token signed with another key", lambda s: jwt.encode(claims(s), "another secret, long enough for HS256 to accept", "HS256"),
     READ, 401),
    ("a token of alg none", unsigned, READ, 401),
    ("a token signed with HS512", lambda s: jwt.encode(claims(s), s.auth.jwt_secret, algorithm="HS512"), READ, 401),
    ("a token for another audience", signed(aud="another-service"), READ, 401),
    ("a token from another issuer", signed(iss="https://idp.example.org"), READ, 401),
    ("a token without exp", signed(exp=...), READ, 401),
    ("a token without sub", signed(sub=...), READ, 401),
    ("a token with an empty sub", signed(sub=""), READ, 401),
    ("a token whose sub is longer than the audit trail keeps", signed(sub="å" * 201), WRITE, 401),
    ("a token whose sub holds a NUL", signed(sub="sekretariat\0x"), WRITE, 401),
    ("a token whose sub holds a lone surrogate", signed(sub="sekretariat\ud800"), WRITE, 401),
    ("a token whose sub is as long as the audit trail keeps", signed(sub="å" * 200), WRITE, 201),
    ("a token whose roles are a number", signed(roles=7), READ, 401),
    ("a token without roles reading", signed(roles=...), READ, 403),
    ("a token without roles writing", signed(roles=...), WRITE, 403),
    ("a token with an unknown role", signed(roles=["admin"]), WRITE, 403),
    ("a viewer writing", signed(roles=["viewer"]), WRITE, 403),
    ("a viewer reading", signed(roles=["viewer"]), READ, 200),
    ("a secretariat reading", signed(), READ, 200),
    ("a secretariat writing", signed(), WRITE, 201),
    ("a secretariat role given as a string", signed(roles="secretariat"), WRITE, 201),
]


@pytest.mark.parametrize(("make", "request_", "status"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
async def test_a_token_gets_what_its_roles_allow(client: Any, settings: Settings, make, request_, status) -> None:
    method, path, body = request_
    reply = await ApiClient(client, make(settings)).send(method, path, json=body)
    assert reply.status == status, reply.raw
    if status == 401:
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert reply.content_type == "application/problem+json"
    if status == 403:
        assert "secretariat" in reply.json()["detail"] or "viewer" in reply.json()["detail"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc"])
async def test_an_authorization_header_that_is_no_bearer_token_gets_401(client: Any, header: str) -> None:
    reply = await ApiClient(client, None).send("GET", "/api/v1/sites", headers={"Authorization": header})
    assert reply.status == 401 and "WWW-Authenticate" in reply.headers


def _path(template: str) -> str:
    return re.sub(r"{\w+}", lambda _: str(uuid.uuid4()), template)


ENDPOINTS = [pytest.param(ep, id=f"{ep.method} {ep.path}") for ep in v1.endpoints]


def test_no_endpoint_lets_a_viewer_write() -> None:
    writes = [ep for ep in v1.endpoints if ep.method != "GET"]
    assert len(writes) >= 15
    assert [f"{ep.method} {ep.path}" for ep in writes if ep.role != "secretariat"] == []


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_every_endpoint_wants_a_token_and_secretariat_ones_refuse_a_viewer(
    viewer: ApiClient, endpoint: Any
) -> None:
    path = _path(endpoint.path)
    body = {} if endpoint.body else None
    anonymous = await viewer.as_token(None).send(endpoint.method, path, json=body)
    assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    as_viewer = await viewer.send(endpoint.method, path, json=body)
    if endpoint.role == "secretariat":
        assert as_viewer.status == 403, as_viewer.raw
    else:
        assert as_viewer.status not in (401, 403), as_viewer.raw


async def test_the_audit_log_is_not_for_viewers(viewer: ApiClient, api: ApiClient) -> None:
    code, body = await viewer.get("/api/v1/audit")
    assert code == 403 and body["type"] == "/problems/forbidden"
    await api.ok("GET", "/api/v1/audit")


def _keypair(alg: str) -> tuple[Any, str]:
    """A private key and its public key as PEM."""
    if alg == "RS256":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, pem


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_with_a_public_key_only_tokens_signed_by_its_private_key_pass(
    aiohttp_client: Any, settings: Settings, alg: str
) -> None:
    private, pem = _keypair(alg)
    auth = settings.auth.model_copy(update={"jwt_public_key": pem, "jwt_secret": ""})
    client = await aiohttp_client(create_app(settings.model_copy(update={"auth": auth})))
    good = jwt.encode(claims(settings, roles=["viewer"]), private, algorithm=alg)
    assert (await ApiClient(client, good).send("GET", "/api/v1/sites")).status == 200
    # The public key used as an HMAC secret: the classic algorithm confusion.
    signing_input = f"{_b64(HS256)}.{_b64(json.dumps(claims(settings)).encode())}"
    mac = hmac.new(pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{_b64(mac)}"
    assert (await ApiClient(client, forged).send("GET", "/api/v1/sites")).status == 401
    other, _ = _keypair(alg)
    stranger = jwt.encode(claims(settings), other, algorithm=alg)
    assert (await ApiClient(client, stranger).send("GET", "/api/v1/sites")).status == 401
