"""Provider webhooks: verified by the provider's rules, recorded once however often they come."""
from __future__ import annotations

from aiohttp import web

from connectors.video import VideoAuthError, VideoRejected, WebhookRequest
from service.http.middleware import problem
from service.keys import SERVICES


async def receive(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    provider = request.match_info["provider"]
    if provider not in svc.video.providers:
        return problem(404, "Not found", "no such webhook")
    body = await request.read()
    public = svc.settings.http.public_url.rstrip("/")
    hook = WebhookRequest(path="/" + request.match_info.get("tail", ""), headers=dict(request.headers), body=body,
                          url=public + request.raw_path)
    try:
        events = svc.video.parse_webhook(provider, hook)
    except VideoAuthError as exc:
        return problem(401, "Unauthorized", f"webhook signature or token refused: {exc}")
    except VideoRejected as exc:
        return problem(400, "Bad webhook", str(exc))
    recorded = await svc.attendance.ingest(
        [(e.invitation_id, e.kind, e.at, e.source, e.dedup_key) for e in events])
    return web.json_response({"events": len(events), "recorded": recorded})


def install(app: web.Application) -> None:
    app.router.add_post("/webhooks/{provider}", receive)
    app.router.add_post("/webhooks/{provider}/{tail:.*}", receive)
