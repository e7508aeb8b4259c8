"""The OpenAPI 3.1 document, made from the endpoints' own pydantic models."""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas.common import Problem
from service.http.api import Api, Endpoint

REF = "#/components/schemas/{model}"
PARAM = re.compile(r"{(\w+)}")

ERRORS = {
    "400": "Malformed request. A request line or a header line longer than 8190 bytes is refused by the HTTP "
           "layer before any route is chosen, with a short `text/plain` message",
    "401": "Missing or invalid token",
    "403": "The token's roles are not enough",
    "404": "No such resource",
    "409": "Conflict, for example a room already booked",
    "413": "Request body too large",
    "415": "The body is not JSON",
    "422": "Invalid input; `errors` names each bad field",
    "503": "The database is unreachable; try again",
}


def build(api: Api, version: str) -> dict[str, Any]:
    """Every endpoint of `api` as an OpenAPI 3.1 document."""
    models: list[tuple[type[BaseModel], str]] = [(Problem, "serialization")]
    for ep in api.endpoints:
        if ep.body:
            models.append((ep.body, "validation"))
        if ep.response:
            models.append((ep.response, "serialization"))
    keys, top = models_json_schema(models, ref_template=REF)
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for ep in api.endpoints:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, keys)
    for ep, links in _links(api):
        paths[ep.path][ep.method.lower()]["responses"][str(ep.status)]["links"] = links
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "forumbridge",
            "version": version,
            "description": "Rooms, video conferences, calendars and attendance for hybrid forum meetings.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(ep: Endpoint, keys: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": ep.handler.__name__,
        "summary": ep.summary,
        "tags": [ep.tag],
        "description": f"Needs the role `{ep.role}`.",
        "parameters": [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
            for n in PARAM.findall(ep.path)
        ],
    }
    if ep.query is not None:
        schema = ep.query.model_json_schema(by_alias=True)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            prop = dict(prop)
            desc = prop.pop("description", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if desc:
                param["description"] = desc
            op["parameters"].append(param)
    if ep.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": keys[(ep.body, "validation")]}},
        }
    ok: dict[str, Any] = {"description": "No content" if ep.response is None else "OK"}
    if ep.response is not None:
        ok["content"] = {"application/json": {"schema": keys[(ep.response, "serialization")]}}
        for media in ep.alternatives:
            ok["content"][media] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {str(ep.status if ep.response is not None or ep.status != 200 else 204): ok}
    problem = {"application/problem+json": {"schema": keys[(Problem, "serialization")]}}
    wanted = ["400", "401", "403", "503"]
    if ep.body is not None:
        wanted += ["413", "415", "422"]
    if ep.query is not None:
        wanted.append("422")
    if PARAM.search(ep.path):
        wanted.append("404")
    if ep.method in ("POST", "PATCH", "DELETE"):
        wanted.append("409")
    for code in sorted(set(wanted)):
        responses[code] = {"description": ERRORS[code], "content": problem}
    responses["400"]["content"] = problem | {"text/plain": {"schema": {"type": "string"}}}
    op["responses"] = responses
    return op


def _links(api: Api) -> list[tuple[Endpoint, dict[str, Any]]]:
    """OpenAPI links from each create to what can be done with what it made.

    A resource's item path is the shortest path that answers with the created
    model and ends in a parameter (GET /meetings/{id} for a meeting, PATCH
    /meetings/{id}/sessions/{sid} for a session). The created `id` fills that
    parameter; the create's own path parameters fill those of the same name.
    Clients and stateful API testers (schemathesis) follow these links.
    """
    out: list[tuple[Endpoint, dict[str, Any]]] = []
    for create in api.endpoints:
        if create.method != "POST" or create.status != 201 or create.response is None:
            continue
        items = [ep.path for ep in api.endpoints
                 if ep.response is create.response and ep.path.endswith("}") and ep.path != create.path]
        if not items:
            continue
        item = min(items, key=len)
        last = PARAM.findall(item)[-1]
        given = set(PARAM.findall(create.path))
        links: dict[str, Any] = {}
        for target in api.endpoints:
            if not (target.path == item or target.path.startswith(item + "/")):
                continue
            params: dict[str, str] = {}
            for name in PARAM.findall(target.path):
                if name == last:
                    params[name] = "$response.body#/id"
                elif name in given:
                    params[name] = f"$request.path.{name}"
            if len(params) != len(PARAM.findall(target.path)):
                continue
            links[target.handler.__name__] = {"operationId": target.handler.__name__, "parameters": params}
        if links:
            out.append((create, links))
    return out
