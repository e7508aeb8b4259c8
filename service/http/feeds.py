"""The ICS feed endpoints: unguessable URLs, ETag and 304."""
from __future__ import annotations

from aiohttp import web

from service.keys import SERVICES


async def _serve(request: web.Request, kind: str) -> web.Response:
    feeds = request.app[SERVICES].feeds
    feed = await (feeds.forum if kind == "forums" else feeds.room)(request.match_info["token"])
    headers = {"ETag": feed.etag, "Cache-Control": "private, max-age=60"}
    if feed.etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    return web.Response(body=feed.body, headers={**headers, "Content-Type": "text/calendar; charset=utf-8"})


async def forum_feed(request: web.Request) -> web.Response:
    return await _serve(request, "forums")


async def room_feed(request: web.Request) -> web.Response:
    return await _serve(request, "rooms")


def install(app: web.Application) -> None:
    app.router.add_get("/feeds/forums/{token}.ics", forum_feed)
    app.router.add_get("/feeds/rooms/{token}.ics", room_feed)
