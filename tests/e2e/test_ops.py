"""What operators rely on: health, readiness, metrics and request ids."""
from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.db.migrate import head
from service.settings import Settings
from tests.conftest import meeting_body
from tests.support.http import ApiClient

FRESH_ID = re.compile(r"^[0-9a-f]{32}$")


def bare_settings(tmp_path: Path, url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database={"url": url}, auth={"jwt_secret": "s" * 43})


async def test_liveness_is_200(api: ApiClient) -> None:
    reply = await api.as_token(None).send("GET", "/healthz")
    assert reply.status == 200 and reply.json() == {"status": "ok"}


async def test_readiness_is_200_on_a_migrated_database(api: ApiClient, settings: Settings) -> None:
    reply = await api.as_token(None).send("GET", "/readyz")
    assert reply.status == 200
    assert reply.json()["migration"] == head() and reply.json()["database"] == settings.database.url.split("+")[0]


@pytest.mark.parametrize(("url", "says"), [
    pytest.param("sqlite+aiosqlite:///{tmp}/empty.db", "forumbridge migrate", id="sqlite without migrations"),
    pytest.param("postgresql+asyncpg://postgres@127.0.0.1:9/forumbridge", "unreachable", id="postgresql unreachable"),
])
async def test_readiness_is_a_503_problem_when_the_database_is_not_ready(
    aiohttp_client: Any, tmp_path: Path, url: str, says: str
) -> None:
    (tmp_path / "empty.db").touch()
    client = await aiohttp_client(create_app(bare_settings(tmp_path, url.format(tmp=tmp_path))))
    reply = await ApiClient(client, None).send("GET", "/readyz")
    assert reply.status == 503 and reply.content_type == "application/problem+json"
    assert says in reply.json()["detail"]
    # Liveness does not depend on the database.
    assert (await ApiClient(client, None).send("GET", "/healthz")).status == 200


async def _metrics(api: ApiClient) -> dict[str, Any]:
    reply = await api.as_token(None).send("GET", "/metrics")
    assert reply.status == 200 and reply.content_type == "text/plain"
    return {f.name: f for f in text_string_to_metric_families(reply.raw.decode())}


def _value(family: Any, suffix: str = "", **labels: str) -> float:
    return sum(s.value for s in family.samples
               if s.name == family.name + suffix and labels.items() <= s.labels.items())


async def test_metrics_count_requests_by_route_template_not_by_path(api: ApiClient) -> None:
    for _ in range(2):
        code, body = await api.get(f"/api/v1/meetings/{uuid.uuid4()}")
        assert code == 404, body
    code, body = await api.get(f"/no/such/page/{uuid.uuid4()}")
    assert code == 404, body
    families = await _metrics(api)
    requests = families["forumbridge_http_requests"]
    assert _value(requests, "_total", route="/api/v1/meetings/{id}", method="GET", status="404") == 2
    routes = {s.labels["route"] for s in requests.samples}
    assert not any(re.search(r"[0-9a-f]{8}-", r) for r in routes), routes
    latency = families["forumbridge_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert _value(latency, "_count", route="/api/v1/meetings/{id}", method="GET") == 2
    assert _value(latency, "_bucket", route="/api/v1/meetings/{id}", method="GET", le="+Inf") == 2


async def test_metrics_count_bookings_made_and_refused(api: ApiClient, world: dict) -> None:
    await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten"))
    mine = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Storsjön"))
    code, _ = await api.post("/api/v1/meetings", meeting_body(world, "Tillväxten", title="Krock"))
    assert code == 409
    code, _ = await api.patch(f"/api/v1/meetings/{mine['id']}", {"room_ids": [world["rooms"]["Tillväxten"]["id"]]})
    assert code == 409
    # Bad input is neither a booking nor a refusal for a conflict.
    code, _ = await api.post("/api/v1/meetings", meeting_body(world, "Utvecklingen", end="2027-04-05T08:00:00"))
    assert code == 422
    bookings = (await _metrics(api))["forumbridge_bookings"]
    assert _value(bookings, "_total", outcome="made") == 2
    assert _value(bookings, "_total", outcome="refused") == 2


REQUESTS = [
    ("GET", "/healthz", None), ("GET", "/readyz", None), ("GET", "/metrics", None), ("GET", "/api/openapi.json", None),
    ("GET", "/api/v1/sites", "secretariat"), ("GET", "/api/v1/sites", None), ("POST", "/api/v1/sites", "secretariat"),
    ("GET", "/nowhere", None), ("DELETE", "/healthz", None), ("GET", f"/api/v1/rooms/{uuid.uuid4()}", "secretariat"),
]


async def test_every_response_carries_a_fresh_request_id(api: ApiClient) -> None:
    seen = set()
    for method, path, role in REQUESTS:
        reply = await (api if role else api.as_token(None)).send(method, path, json={} if method == "POST" else None)
        rid = reply.headers.get("X-Request-Id", "")
        assert FRESH_ID.match(rid), (method, path, reply.status)
        seen.add(rid)
    assert len(seen) == len(REQUESTS)


@pytest.mark.parametrize(("sent", "echoed"), [
    ("req-42.abc_DEF", True), ("0f5e2c1a-8d7b-4f60-9a3e-2b1c4d5e6f70", True),
    ("two words", False), ("x" * 65, False), ("åäö", False), ("a;b=c", False), ("", False),
])
async def test_a_sane_incoming_request_id_is_echoed_and_any_other_replaced(api: ApiClient, sent: str, echoed: bool) -> None:
    for method, path in (("GET", "/healthz"), ("GET", "/api/v1/nothing-here"), ("POST", "/api/v1/sites")):
        reply = await api.send(method, path, json={"name": 1}, headers={"X-Request-Id": sent})
        rid = reply.headers["X-Request-Id"]
        assert (rid == sent) is echoed and (echoed or FRESH_ID.match(rid)), (path, rid)
