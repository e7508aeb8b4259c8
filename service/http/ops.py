"""Operations endpoints: liveness, readiness, metrics and the API document."""
from __future__ import annotations

from aiohttp import web

from service.db.migrate import current, head
from service.http.middleware import problem
from service.keys import OPENAPI, SERVICES


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    try:
        revision = await current(svc.db.writer if svc.db.is_sqlite else svc.db.reader)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return problem(503, "Not ready", f"database unreachable: {type(exc).__name__}")
    wanted = head()
    if revision != wanted:
        return problem(503, "Not ready", f"database at migration {revision}, the code needs {wanted}; run forumbridge migrate")
    return web.json_response({"status": "ready", "database": svc.db.dialect, "migration": revision})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def install(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
