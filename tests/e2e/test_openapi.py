"""The OpenAPI document: valid 3.1, complete, and true to what the handlers accept and answer."""
from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from service.http.routes import v1
from tests.conftest import meeting_body
from tests.support.http import ApiClient

# The body fields DESIGN.md promises clients, by operation.
PROMISED_BODIES = [
    ("post", "/api/v1/sites", {"name", "city", "timezone"}),
    ("post", "/api/v1/rooms", {"site_id", "name", "capacity", "equipment", "video_endpoint", "calendar_url"}),
    ("post", "/api/v1/people", {"name", "email", "organisation", "region"}),
    ("post", "/api/v1/forums", {"name", "kind", "calendar_url"}),
    ("post", "/api/v1/meetings",
     {"forum_id", "title", "starts_at", "ends_at", "timezone", "room_ids", "conference", "sessions"}),
    ("patch", "/api/v1/meetings/{id}",
     {"forum_id", "title", "starts_at", "ends_at", "timezone", "room_ids", "conference", "sessions"}),
    ("post", "/api/v1/meetings/{id}/sessions", {"title", "topic", "starts_at", "ends_at"}),
    ("post", "/api/v1/meetings/{id}/invitations", {"person_id", "mode", "site_id", "session_ids"}),
]
PROMISED_ANSWERS = [
    ("get", "/api/v1/meetings/{id}", {"id", "created_at", "updated_at", "status", "uid", "sequence", "timezone"}),
    ("post", "/api/v1/meetings/{id}/invitations", {"id", "rsvp", "join_url", "session_ids"}),
    ("get", "/api/v1/sites", {"items", "next_cursor"}),
]


@pytest.fixture
async def document(api: ApiClient) -> dict[str, Any]:
    reply = await api.as_token(None).send("GET", "/api/openapi.json")
    assert reply.status == 200 and reply.content_type == "application/json"
    return reply.json()


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_schema(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return resolve(doc, doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])


def answer_schema(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    responses = doc["paths"][path][method]["responses"]
    ok = next(v for k, v in responses.items() if k.startswith("2"))
    return ok["content"]["application/json"]["schema"]


async def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)


async def test_every_api_route_the_app_serves_is_documented_and_nothing_else(client: Any, document: dict) -> None:
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/v1") and route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert len(served) >= 25
    assert served == {d for d in documented if d[1].startswith("/api/v1")}


@pytest.mark.parametrize(("method", "path", "fields"), [pytest.param(*c, id=f"{c[0]} {c[1]}") for c in PROMISED_BODIES])
async def test_the_documented_bodies_hold_the_fields_the_design_promises(document, method, path, fields) -> None:
    schema = body_schema(document, method, path)
    assert fields <= set(schema["properties"])
    assert schema.get("additionalProperties") is False


async def test_documented_sessions_of_a_meeting_hold_their_times(document: dict[str, Any]) -> None:
    sessions = body_schema(document, "post", "/api/v1/meetings")["properties"]["sessions"]
    item = resolve(document, sessions["items"])
    assert {"title", "topic", "starts_at", "ends_at"} <= set(item["properties"])


@pytest.mark.parametrize(("method", "path", "fields"), [pytest.param(*c, id=f"{c[0]} {c[1]}") for c in PROMISED_ANSWERS])
async def test_the_documented_answers_hold_the_fields_the_design_promises(document, method, path, fields) -> None:
    assert fields <= set(resolve(document, answer_schema(document, method, path))["properties"])


async def test_query_parameters_are_documented_by_the_names_clients_send(document: dict[str, Any]) -> None:
    params = {p["name"] for p in document["paths"]["/api/v1/meetings"]["get"]["parameters"] if p["in"] == "query"}
    assert {"from", "to", "limit", "cursor", "forum_id", "status"} <= params and "from_" not in params
    busy = document["paths"]["/api/v1/rooms/{id}/busy"]["get"]["parameters"]
    assert {p["name"] for p in busy} == {"id", "from", "to"}


BODY_ENDPOINTS = [pytest.param(ep, id=f"{ep.method} {ep.path}") for ep in v1.endpoints if ep.body is not None]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_each_documented_body_is_the_one_its_handler_validates(api: ApiClient, document: dict, endpoint) -> None:
    schema = body_schema(document, endpoint.method.lower(), endpoint.path)
    path = re.sub(r"{\w+}", lambda _: str(uuid.uuid4()), endpoint.path)
    # The handler names as missing exactly what the document says is required...
    code, problem = await api.request(endpoint.method, path, json={})
    missing = {e["field"] for e in (problem.get("errors") or []) if e["type"] == "missing"} if code == 422 else set()
    assert missing == set(schema.get("required", [])), (code, problem)
    # ...and refuses a field the document does not list.
    code, problem = await api.request(endpoint.method, path, json={"not_in_the_document": 1})
    assert code == 422 and "not_in_the_document" in {e["field"] for e in problem["errors"]}


def _check(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    errors = list(Draft202012Validator({**schema, "components": document["components"]}).iter_errors(instance))
    assert not errors, [e.message for e in errors]


async def test_real_answers_match_their_documented_schemas(api: ApiClient, world: dict, document: dict) -> None:
    created = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", conference={"provider": "jitsi"},
        sessions=[{"title": "Inledning", "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T10:00:00"}]))
    _check(document, answer_schema(document, "post", "/api/v1/meetings"), created)
    _check(document, answer_schema(document, "get", "/api/v1/meetings"), await api.ok("GET", "/api/v1/meetings"))
    busy = await api.ok("GET", f"/api/v1/rooms/{world['rooms']['Tillväxten']['id']}/busy?from=2027-04-05T00:00:00Z")
    _check(document, answer_schema(document, "get", "/api/v1/rooms/{id}/busy"), busy)
    code, problem = await api.post("/api/v1/meetings", {"title": 5})
    assert code == 422
    problem_schema = document["paths"]["/api/v1/meetings"]["post"]["responses"]["422"]["content"]
    _check(document, problem_schema["application/problem+json"]["schema"], problem)


MADE = {"id": "$response.body#/id"}
SESSION = {"id": "$request.path.id", "sid": "$response.body#/id"}


@pytest.mark.parametrize(("create", "targets"), [
    ("/api/v1/meetings", {"get_meeting": MADE, "update_meeting": MADE, "cancel_meeting": MADE, "add_session": MADE,
                          "create_invitation": MADE, "attendance_report": MADE}),
    ("/api/v1/meetings/{id}/sessions", {"update_session": SESSION, "delete_session": SESSION}),
    ("/api/v1/meetings/{id}/invitations", {"get_invitation": MADE, "update_invitation": MADE,
                                           "delete_invitation": MADE, "reissue_invitation": MADE}),
    ("/api/v1/rooms", {"get_rooms": MADE, "update_rooms": MADE, "delete_rooms": MADE, "room_busy": MADE,
                       "rotate_room_feed": MADE}),
])
async def test_links_lead_from_each_create_to_what_can_be_done_with_what_it_made(document, create, targets) -> None:
    """What clients and the stateful fuzz (tests/e2e/test_fuzz_api.py) follow."""
    links = document["paths"][create]["post"]["responses"]["201"]["links"]
    operations = {op["operationId"]: path for path, ops in document["paths"].items() for op in ops.values()}
    for name, parameters in targets.items():
        assert links[name]["operationId"] == name
        assert links[name]["parameters"] == parameters
        assert set(parameters) == set(re.findall(r"{(\w+)}", operations[name]))


async def test_a_request_line_too_long_for_the_http_layer_gets_the_documented_400(api: ApiClient, document: dict) -> None:
    """aiohttp refuses a request line over 8190 bytes before any route is chosen, in text/plain:
    every operation's document says so, so that such an answer is on the document (the long fuzz
    run found it off it)."""
    reply = await api.send("GET", "/api/v1/people?" + "&".join(["limit=1"] * 1200))
    assert reply.status == 400 and reply.content_type == "text/plain"
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            assert set(op["responses"]["400"]["content"]) == {"application/problem+json", "text/plain"}, (method, path)
