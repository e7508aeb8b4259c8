"""A thin client for the API as a user of it sees it."""
from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from service.http.auth import issue_token
from service.settings import Settings


def token_for(settings: Settings, role: str = "secretariat", sub: str = "tester", ttl: timedelta = timedelta(hours=1)) -> str:
    return issue_token(settings.auth.jwt_secret, sub, role, ttl, settings.auth.issuer, settings.auth.audience)


@dataclass
class Reply:
    """An answer as the client received it: status, headers and the raw body."""

    status: int
    headers: Any
    raw: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def json(self) -> Any:
        return jsonlib.loads(self.raw)


class ApiClient:
    """Sends requests with a bearer token and returns (status, body)."""

    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def as_token(self, token: str | None) -> "ApiClient":
        return ApiClient(self.client, token)

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    async def request(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = self._headers(kw.pop("headers", None))
        async with self.client.request(method, path, json=json, headers=headers, **kw) as resp:
            if resp.content_type.endswith("json"):
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def send(self, method: str, path: str, **kw: Any) -> Reply:
        """Any request (`json=`, `data=`, `headers=`), answered with its headers and raw body."""
        headers = self._headers(kw.pop("headers", None))
        async with self.client.request(method, path, headers=headers, **kw) as resp:
            return Reply(resp.status, resp.headers, await resp.read())

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PATCH", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)

    async def ok(self, method: str, path: str, json: Any = None, status: int | None = None) -> Any:
        """The body of a request that must succeed (with `status`, if given)."""
        code, body = await self.request(method, path, json=json)
        expected = status or (201 if method == "POST" else 200)
        assert code == expected, f"{method} {path} -> {code}: {body}"
        return body
