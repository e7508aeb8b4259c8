"""Declared endpoints: parsing, role checks and serialisation in one place.

Each endpoint names its body, query and response models; the same models
validate requests and make the OpenAPI document.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, ValidationError

from schemas.common import Page
from service.errors import DomainError, NotFound
from service.http.auth import Unauthenticated, require
from service.keys import SERVICES
from service.usecases.base import Actor


class BadBody(DomainError):
    status = 400
    title = "Malformed request body"
    type = "/problems/malformed-body"


class WrongContentType(DomainError):
    status = 415
    title = "Unsupported media type"
    type = "/problems/unsupported-media-type"


class RequestInvalid(Exception):
    """The request's body or query failed its schema. Only request parsing raises it, so a
    ValidationError anywhere else (a bug in our own output) stays a 500."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Ctx:
    """What a handler gets: the services, the actor and the parsed request."""

    request: web.Request
    actor: Actor
    body: Any = None
    query: Any = None
    ids: dict[str, uuid.UUID] = field(default_factory=dict)

    @property
    def svc(self) -> Any:
        return self.request.app[SERVICES]


Handler = Callable[[Ctx], Awaitable[Any]]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    role: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    paged: bool = False
    # Other media types the endpoint answers with, by Accept (documented in OpenAPI).
    alternatives: tuple[str, ...] = ()


class Api:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        role: str = "viewer",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        paged: bool = False,
        alternatives: tuple[str, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            resp = Page[response] if paged else response  # type: ignore[valid-type]
            self.endpoints.append(
                Endpoint(method, path, fn, summary, tag, role, body, query, resp, status, paged, alternatives))
            return fn

        return deco

    def install(self, app: web.Application) -> None:
        for ep in self.endpoints:
            app.router.add_route(ep.method, ep.path, _wrap(ep))


def _wrap(ep: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        actor = await _authenticate(request)
        require(actor, ep.role)
        ctx = Ctx(request, actor)
        for name, raw in request.match_info.items():
            try:
                ctx.ids[name] = uuid.UUID(raw)
            except ValueError:
                raise NotFound(f"{name}: {raw!r} is not an id of this service") from None
        try:
            if ep.query is not None:
                ctx.query = ep.query.model_validate(_query_dict(request))
            if ep.body is not None:
                ctx.body = ep.body.model_validate(await _json_body(request))
        except ValidationError as exc:
            raise RequestInvalid(exc) from None
        result = await ep.handler(ctx)
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        if ep.paged:
            items, nxt = result
            result = ep.response(items=items, next_cursor=nxt)
        return json_response(result, ep.status)

    handle.__name__ = ep.handler.__name__
    return handle


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(by_alias=True).encode(), status=status, content_type="application/json"
    )


async def _authenticate(request: web.Request) -> Actor:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("an Authorization: Bearer token is required")
    return await request.app[SERVICES].verifier.verify(token.strip())


def _query_dict(request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        out[key] = values[0] if len(values) == 1 else values
    return out


async def _json_body(request: web.Request) -> Any:
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise WrongContentType(f"body: send application/json, not {ctype or 'nothing'}", field="body")
    raw = await request.read()
    try:
        # Decoded here, strictly: json.loads(bytes) would also take UTF-16 and UTF-32, and UTF-8
        # with encoded surrogates. A UTF-8 BOM is tolerated (RFC 8259, section 8.1).
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise BadBody("body: not UTF-8", field="body") from None
    except json.JSONDecodeError as exc:
        raise BadBody(f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", field="body") from None
    except RecursionError:
        raise BadBody("body: nested too deeply", field="body") from None
    except ValueError as exc:
        # Python refuses integers of more than 4300 digits while parsing.
        raise BadBody(f"body: not acceptable JSON ({exc})", field="body") from None


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Each bad field by its dotted path, as clients name it."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"]
        if not loc and ": " in msg:
            # Model-level rules say which field they are about ("room_ids: ...").
            head, _, rest = msg.removeprefix("Value error, ").partition(": ")
            loc, msg = [head], rest
        out.append({"field": ".".join(loc) or "body", "message": msg, "type": err["type"]})
    return out
