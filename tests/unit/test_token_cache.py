"""Verified API tokens are remembered until they expire, and never past that."""
from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta

import jwt
import pytest

from service.http import auth
from service.http.auth import TokenVerifier, Unauthenticated, issue_token
from service.settings import Settings


def verifier(tmp_path, **auth_settings) -> tuple[TokenVerifier, str, Settings]:  # noqa: ANN001
    secret = secrets.token_urlsafe(32)
    settings = Settings(data_dir=tmp_path, auth={"jwt_secret": secret, "leeway_s": 0, **auth_settings})
    return TokenVerifier(settings, secret), secret, settings


def token(secret: str, settings: Settings, ttl: timedelta, sub: str = "sekretariatet") -> str:
    return issue_token(secret, sub, "secretariat", ttl, settings.auth.issuer, settings.auth.audience)


async def test_a_token_is_decoded_once_while_it_is_valid(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    v, secret, settings = verifier(tmp_path)
    calls = []
    real = jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    good = token(secret, settings, timedelta(hours=1))
    first = await v.verify(good)
    assert await v.verify(good) == first and first.sub == "sekretariatet"
    assert len(calls) == 1
    # Another token, even one differing in one character of its signature, is checked in full.
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    with pytest.raises(Unauthenticated):
        await v.verify(forged)
    with pytest.raises(Unauthenticated):
        await v.verify(forged)
    assert len(calls) == 3


async def test_a_remembered_token_is_refused_once_it_expires(tmp_path) -> None:  # noqa: ANN001
    v, secret, settings = verifier(tmp_path)
    short = token(secret, settings, timedelta(seconds=1))
    await v.verify(short)
    claims = jwt.decode(short, options={"verify_signature": False})
    await asyncio.sleep(max(0.0, claims["exp"] - time.time()) + 0.2)
    with pytest.raises(Unauthenticated, match="expired"):
        await v.verify(short)


async def test_the_memory_is_bounded(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SIZE", 3)
    v, secret, settings = verifier(tmp_path)
    for i in range(10):
        await v.verify(token(secret, settings, timedelta(hours=1), sub=f"user{i}"))
    assert len(v._verified) == 3
