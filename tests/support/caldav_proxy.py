"""A reverse proxy in front of a real CalDAV server that can refuse chosen requests.

It shows the connector a server that lacks a feature (no sync-collection) or fails in a chosen
way (a 503, a 500), while everything else is answered by the real Radicale or Xandikos.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.support.caldav_servers import CaldavServer

# (method, path, body) -> a status to answer instead of the server, or None to pass the request on.
Rule = Callable[[str, str, bytes], "int | None"]
SESSION = web.AppKey("session", aiohttp.ClientSession)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


@dataclass
class CaldavProxy:
    """The proxy's origin, the rules it applies, and the requests it refused."""

    upstream: CaldavServer
    origin: str = ""
    rules: list[Rule] = field(default_factory=list)
    refused: list[tuple[str, str, int]] = field(default_factory=list)

    def url(self, upstream_url: str) -> str:
        """The same resource, reached through the proxy."""
        return self.origin + upstream_url[len(self.upstream.origin):]

    def refuse(self, status: int, method: str | None = None, body_contains: bytes | None = None) -> None:
        """Answer `status` to every request matching `method` and `body_contains`."""
        def rule(m: str, _path: str, body: bytes) -> int | None:
            if method is not None and m != method:
                return None
            if body_contains is not None and body_contains not in body:
                return None
            return status
        self.rules.append(rule)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        for rule in self.rules:
            status = rule(request.method, request.path, body)
            if status is not None:
                self.refused.append((request.method, request.path, status))
                return web.Response(status=status, text=f"refused by the test proxy ({status})")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        session: aiohttp.ClientSession = request.app[SESSION]
        async with session.request(request.method, self.upstream.origin + request.path_qs, data=body,
                                   headers=headers, allow_redirects=False) as upstream:
            content = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=content, headers=out)


@pytest.fixture
async def caldav_proxy(caldav_server: CaldavServer) -> AsyncIterator[CaldavProxy]:
    """A proxy on a loopback port in front of the server under test, passing everything on at first."""
    proxy = CaldavProxy(caldav_server)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    session = aiohttp.ClientSession()  # bodies come decompressed; Content-Encoding is dropped
    app[SESSION] = session
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    proxy.origin = f"http://127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        await runner.cleanup()
        await session.close()
