"""schemathesis against the app's own OpenAPI document: no 5xx, every answer as documented.

Every operation is fuzzed with data that fits the document and with data that
does not, first with made-up ids and then with ids of real resources (so that a
PATCH reaches a real meeting); then schemathesis follows the document's links
(create -> read, change, delete) as a state machine.

SQLite only: the fuzz looks for handlers and schemas that break, and those are
the same code on both databases; the PostgreSQL path of every handler runs in
the other e2e tests, which are parametrized over both. Running it twice would
double the suite's longest test for little.

`./dev fuzz` runs the same test with FORUMBRIDGE_FUZZ_EXAMPLES=2000.
"""
from __future__ import annotations

import os
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.http.routes import v1
from service.settings import Settings
from tests.conftest import VIDEO
from tests.support.databases import SqliteTemplate
from tests.support.http import token_for
from tests.support.live import LiveApp

EXAMPLES = int(os.environ.get("FORUMBRIDGE_FUZZ_EXAMPLES", "12"))  # per operation
# schemathesis's strategies draw from `random` inside; Hypothesis warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=EXAMPLES <= 100,  # the bounded run is the same every time; the long one explores
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def on_loopback(url: str) -> str:
    """A generated calendar URL moved to 127.0.0.1's discard port, where the connection is refused at once.

    The service connects to the calendar URLs it is given (push and pull), and a test
    must never make it reach another host; a value that is no URL stays as it is.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - the service refuses a URL whose port is no number
    except ValueError:
        return url
    return urlunsplit(parts._replace(netloc="127.0.0.1:9")) if parts.hostname else url


class Live:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        # Given with every case: it replaces the made-up token schemathesis puts in for the document's scheme.
        self.auth = {"Authorization": f"Bearer {token}"}
        self.session.headers.update(self.auth)

    def send(self, case: Any) -> requests.Response:
        """The case as schemathesis would send it, through our own session: schemathesis's own
        sender counts pooled connections through urllib3 internals that urllib3-future (which
        caldav brings in through niquests) does not have."""
        if isinstance(case.body, dict) and isinstance(case.body.get("calendar_url"), str):
            case.body["calendar_url"] = on_loopback(case.body["calendar_url"])
        kwargs = case.as_transport_kwargs(base_url=self.base_url, headers=self.auth)
        return self.session.request(**kwargs, timeout=30)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.session.request(method, self.base_url + path, json=body, timeout=30)
        assert resp.status_code < 300, (method, path, resp.status_code, resp.text)
        return resp.json()


@pytest.fixture(scope="module")
def live(sqlite_template: SqliteTemplate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("fuzz")
    settings = Settings(
        data_dir=folder / "data",
        database={"url": sqlite_template.fresh(folder)},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        video=VIDEO,
        mail={"host": "127.0.0.1", "port": 9},
    )
    with LiveApp(settings) as base_url:
        yield Live(base_url, token_for(settings, "secretariat", "fuzz"))


@pytest.fixture(scope="module")
def schema(live: Live) -> Any:
    return schemathesis.openapi.from_url(f"{live.base_url}/api/openapi.json")


@pytest.fixture
def real(live: Live) -> dict[str, str]:
    """Ids of a fresh set of real resources: a booked meeting with a session and an invitation."""
    tag = uuid.uuid4().hex[:8]
    site = live.ok("POST", "/api/v1/sites", {"name": f"Kontor {tag}", "city": "Östersund"})
    room = live.ok("POST", "/api/v1/rooms", {"site_id": site["id"], "name": f"Rum {tag}", "capacity": 8})
    forum = live.ok("POST", "/api/v1/forums", {"name": f"Forum {tag}", "kind": "officials"})
    person = live.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": f"asa.{tag}@example.se"})
    meeting = live.ok("POST", "/api/v1/meetings", {
        "forum_id": forum["id"], "title": "Forummöte", "room_ids": [room["id"]],
        "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T12:00:00", "conference": {"provider": "jitsi"},
        "sessions": [{"title": "Inledning", "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T10:00:00"}]})
    invitation = live.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {
        "person_id": person["id"], "mode": "remote"})
    return {"site": site["id"], "room": room["id"], "forum": forum["id"], "person": person["id"],
            "meeting": meeting["id"], "session": meeting["sessions"][0]["id"], "invitation": invitation["id"]}


REAL_DAY = datetime(2027, 4, 5, 9, 0)  # the real meeting: 09:00-12:00 in its zone
FREE_DAYS = datetime(2030, 1, 7, 13, 0)
# Which real resource a path's {id} names, by the path's first segment after /api/v1.
OWNER = {"sites": "site", "rooms": "room", "forums": "forum", "people": "person", "meetings": "meeting",
         "invitations": "invitation"}
# Id fields in bodies, filled with a real resource's id so that a create can succeed.
BODY_IDS = {"site_id": "site", "forum_id": "forum", "person_id": "person", "room_ids": "room",
            "session_ids": "session", "invitation_id": "invitation"}


def _path_ids(path: str, real: dict[str, str]) -> dict[str, str]:
    owner = OWNER[path.split("/")[3]]
    return {name: real[owner] if name == "id" else real["session"]
            for name in ("id", "sid") if "{" + name + "}" in path}


def _usable(case: Any, real: dict[str, str], day: int) -> Any:
    """The case with real ids, a unique email and times that fit, so that creates and changes can succeed."""
    body = case.body
    if not isinstance(body, dict):
        return case
    for name, owner in BODY_IDS.items():
        if name in body:
            body[name] = [real[owner]] if name.endswith("_ids") else real[owner]
    if "email" in body:
        body["email"] = f"fuzz.{uuid.uuid4().hex[:12]}@example.se"
    if "timezone" in body:
        body["timezone"] = "Europe/Stockholm"
    if isinstance(body.get("conference"), dict):
        body["conference"] = {"provider": "jitsi"}
    # Inside the real meeting for its sessions; a free day of its own for a new or moved meeting.
    start = REAL_DAY + timedelta(hours=1) if "/sessions" in case.operation.path else FREE_DAYS + timedelta(days=day)
    times = {"starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=1)).isoformat()}
    body.update({k: v for k, v in times.items() if k in body})
    for session in body.get("sessions") or []:
        if isinstance(session, dict):
            session.update({k: v for k, v in times.items() if k in session})
    return case


OPERATIONS = [pytest.param(ep.method, ep.path, id=f"{ep.method} {ep.path}") for ep in v1.endpoints]
# Operations that take nothing (no body, query or path parameter) have no input to vary: a few
# examples try what there is (the negative mode's stray bodies). `POST /api/v1/calendars/sync` is one,
# and each of its calls does real work (every calendar pulled, every waiting job run): 300 of them
# outlasted the long run's per-test limit.
NO_INPUT = {(ep.method, ep.path) for ep in v1.endpoints if not ep.body and ep.query is None and "{" not in ep.path}
NO_INPUT_EXAMPLES = min(EXAMPLES, 25)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_operation_answers_a_server_error_or_off_its_document(
    live: Live, schema: Any, real: dict[str, str], method: str, path: str
) -> None:
    operation = schema[path][method]
    fixed = _path_ids(path, real) if "{" in path else None
    strategies = [operation.as_strategy(mode, path_parameters=ids)
                  for mode in schemathesis.GenerationMode for ids in ([None, fixed] if fixed else [None])]
    strategies.append(st.builds(_usable, operation.as_strategy(path_parameters=fixed), st.just(real),
                                st.integers(min_value=0, max_value=3000)))

    @hypothesis.settings(FUZZ, max_examples=NO_INPUT_EXAMPLES if (method, path) in NO_INPUT else EXAMPLES)
    @hypothesis.given(case=st.one_of(strategies))
    def fuzz(case: Any) -> None:
        case.validate_response(live.send(case), checks=CHECKS)

    fuzz()


def test_following_the_documents_links_never_gets_a_server_error_or_an_undocumented_answer(
    live: Live, schema: Any
) -> None:
    found: list[str] = []

    class Fuzz(schema.as_state_machine()):  # type: ignore[misc]
        def call(self, case: Any, **kwargs: Any) -> Any:
            return schemathesis.Response.from_any(live.send(case))

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            # Collected, not raised: Hypothesis would replay a failing scenario to report it,
            # and against a server whose state has moved on the replay draws differently.
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as exc:
                found.append(str(exc))

    runs = hypothesis.settings(FUZZ, max_examples=max(EXAMPLES, 10), stateful_step_count=8)
    for attempt in range(3):
        try:
            Fuzz.run(settings=hypothesis.settings(runs, derandomize=attempt == 0 and runs.derandomize))
            break
        except FlakyStrategyDefinition:
            # The server's state changed what a scenario drew (schemathesis's own runner
            # starts a fresh session then, too).
            continue
    assert not found, f"{len(found)} failures; the first:\n{found[0]}"


def test_every_calendar_the_fuzz_gave_the_service_is_on_loopback(live: Live) -> None:
    """The guard of on_loopback: no calendar the service syncs (and so connects to) is elsewhere."""
    calendars = live.ok("GET", "/api/v1/calendars")["items"]
    assert {urlsplit(c["url"]).hostname for c in calendars} <= {"127.0.0.1"}
