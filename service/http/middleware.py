"""The one place where exceptions become HTTP problems, plus request ids, logs and metrics."""
from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from service.db.engine import is_unavailable
from service.errors import DomainError, Unavailable
from service.http.api import RequestInvalid, validation_errors
from service.http.auth import Forbidden, Unauthenticated
from service.keys import REQUEST_ID, SERVICES

log = logging.getLogger("forumbridge.http")
# An incoming id is echoed only when it is this tame (it goes into logs and headers).
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PROBLEM = "application/problem+json"


SECRET_PATH = re.compile(r"^/(j|feeds/forums|feeds/rooms)/[^/?]+")


def redact(path: str) -> str:
    """Join and feed tokens are credentials: they stay out of the logs."""
    return SECRET_PATH.sub(lambda m: f"/{m.group(1)}/…", path)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def problem(status: int, title: str, detail: str | None = None, *, type_: str = "about:blank", **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.json_response(body, status=status, content_type=PROBLEM, dumps=_dumps)


def _from_exception(request: web.Request, exc: BaseException) -> web.StreamResponse:
    if isinstance(exc, DomainError):
        extra = dict(exc.extra)
        if "field" in extra and "errors" not in extra:
            extra["errors"] = [{"field": extra.pop("field"), "message": exc.detail, "type": "value_error"}]
        extra.pop("field", None)
        return problem(exc.status, exc.title, exc.detail, type_=exc.type, **extra)
    if isinstance(exc, RequestInvalid):
        errors = validation_errors(exc.error)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid input", detail, type_="/problems/validation", errors=errors)
    if isinstance(exc, Unauthenticated):
        resp = problem(401, "Unauthorized", f"missing or invalid token: {exc}", type_="/problems/unauthorized")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="forumbridge"'
        return resp
    if isinstance(exc, Forbidden):
        return problem(403, "Forbidden", str(exc), type_="/problems/forbidden")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return problem(413, "Request body too large", f"body: larger than {exc.max_size} bytes" if hasattr(exc, "max_size") else "body: too large", errors=[{"field": "body", "message": "too large", "type": "too_large"}])
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        resp = problem(exc.status, exc.reason, exc.text if exc.text and not exc.text.startswith(str(exc.status)) else None)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            resp.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return resp
    if is_unavailable(exc):
        # The database is out of reach (refused, reset, timed out), wherever the request met it:
        # a 503 the client may retry, not a 500.
        log.warning("database unavailable in %s %s: %s: %s", request.method, redact(request.path), type(exc).__name__, exc)
        return problem(503, Unavailable.title, "the database cannot be reached; try again shortly", type_=Unavailable.type)
    log.exception("unhandled error in %s %s", request.method, redact(request.path), exc_info=exc)
    return problem(500, "Internal server error", f"request {request.get(REQUEST_ID, '?')} failed; it has been logged")


@web.middleware
async def observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Request id, error mapping, one log line and the metrics of every request."""
    rid = request.headers.get("X-Request-Id")
    if rid is None or SANE_REQUEST_ID.match(rid) is None:
        rid = os.urandom(16).hex()
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            # A redirect (the join link's 302, the RSVP form's 303) is an answer like any other:
            # logged and counted before aiohttp sends it.
            _observed(request, exc, rid, started)
            raise
        response = _from_exception(request, exc)
    except Exception as exc:  # noqa: BLE001 - the one place that maps every error
        response = _from_exception(request, exc)
    _observed(request, response, rid, started)
    return response


def _observed(request: web.Request, response: web.StreamResponse | web.HTTPException, rid: str, started: float) -> None:
    elapsed = time.perf_counter() - started
    response.headers["X-Request-Id"] = rid
    resource = request.match_info.route.resource
    request.app[SERVICES].metrics.request(resource.canonical if resource is not None else "unmatched", request.method,
                                          response.status, elapsed)
    if log.isEnabledFor(logging.INFO):
        # The arguments (the redacted path above all) are only worth making when the line is written.
        log.info("%s %s %s %.1fms rid=%s", request.method, redact(request.path_qs[:300]), response.status,
                 elapsed * 1000, rid)
