"""Bearer JWTs: verified with a fixed list of algorithms, issuer and audience checked."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.settings import Settings
from service.usecases.base import Actor

ROLES = ("secretariat", "viewer")
# Which roles satisfy a route's requirement.
GRANTS = {"viewer": {"viewer", "secretariat"}, "secretariat": {"secretariat"}}


class Unauthenticated(Exception):
    """The token is missing or cannot be trusted (401)."""


class Forbidden(Exception):
    """The token is fine, its roles are not enough (403)."""


# Tokens verified with a fixed key, remembered until they expire (a client sends the same token
# with every request; checking its signature again each time is the costliest part of a small
# request). Bounded: the oldest are forgotten first.
VERIFIED_CACHE_SIZE = 1024


class TokenVerifier:
    """Checks signature, algorithm, expiry, issuer and audience; the key type fixes the algorithm.

    A token that passed is remembered (by its exact text) with its expiry, and is accepted again
    without decoding until then; expiry is checked on every use, with the same leeway. Only
    tokens that passed are remembered, and only with a fixed key: with a JWKS URL the key set
    may change, so every request is checked against it.
    """

    def __init__(self, settings: Settings, secret: str) -> None:
        auth = settings.auth
        self.issuer = auth.issuer
        self.audience = auth.audience
        self.leeway = auth.leeway_s
        self._verified: dict[str, tuple[Actor, float]] = {}
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any
        if auth.jwks_url:
            self._jwks = jwt.PyJWKClient(auth.jwks_url, cache_keys=True, lifespan=300, timeout=10)
            self.algorithms = ["RS256", "ES256"]
        elif auth.jwt_public_key:
            self._key = load_pem_public_key(auth.jwt_public_key.encode())
            if isinstance(self._key, rsa.RSAPublicKey):
                self.algorithms = ["RS256"]
            elif isinstance(self._key, ec.EllipticCurvePublicKey):
                self.algorithms = ["ES256"]
            else:
                raise ValueError("auth.jwt_public_key: only RSA and P-256 keys are supported")
        else:
            self._key = secret
            self.algorithms = ["HS256"]

    async def verify(self, token: str) -> Actor:
        known = self._verified.get(token)
        if known is not None:
            actor, expires = known
            if time.time() < expires:
                return actor
            del self._verified[token]
        if not token.isascii():
            # A JWT is base64url and dots; other bytes in the header would fail inside PyJWT's encode.
            raise Unauthenticated("not a JWT")
        try:
            key = self._key if self._jwks is None else await asyncio.to_thread(self._signing_key, token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(str(exc)) from None
        roles = claims.get("roles", [])
        if isinstance(roles, str):
            roles = [roles]
        sub = claims["sub"]
        # The audit trail stores `sub` as who acted (200 characters, text PostgreSQL can store: no
        # NUL, no lone surrogate).
        if not isinstance(roles, list) or not isinstance(sub, str) or not 0 < len(sub) <= 200 or "\0" in sub \
                or not _storable(sub):
            raise Unauthenticated("malformed roles or sub claim")
        actor = Actor(claims["sub"], frozenset(r for r in roles if r in ROLES))
        if self._jwks is None:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = (actor, float(claims["exp"]) + self.leeway)
        return actor

    def _signing_key(self, token: str) -> Any:
        assert self._jwks is not None
        return self._jwks.get_signing_key_from_jwt(token).key


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require(actor: Actor, role: str) -> None:
    if not actor.roles & GRANTS[role]:
        raise Forbidden(f"this needs the role {role!r}; the token has {sorted(actor.roles) or 'none'}")


def issue_token(secret: str, sub: str, role: str, ttl: timedelta, issuer: str, audience: str) -> str:
    """An HS256 token for `sub` with one role, valid for `ttl`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    now = datetime.now(timezone.utc)
    claims = {"sub": sub, "roles": [role], "iss": issuer, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")
