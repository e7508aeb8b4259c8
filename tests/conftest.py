"""Fixtures: the real app on a real database, SQLite and PostgreSQL alike."""
from __future__ import annotations

pytest_plugins = ["tests.support.caldav_servers", "tests.support.smtp_server"]

import secrets
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from service.app import create_app
from service.settings import Settings
from tests.support.databases import PostgresDatabase, SqliteTemplate, connect_postgres
from tests.support.http import ApiClient, token_for


VIDEO = {
    "jitsi": {"url": "https://meet.forum.test", "app_id": "forumbridge", "app_secret": "x" * 40,
              "audience": "forumbridge", "subject": "meet.forum.test", "webhook_token": "jitsi-hook-token-0123456789"},
}


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabase]:
    db = connect_postgres()
    yield db
    db.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_template").fresh(tmp_path)
    return request.getfixturevalue("postgres").fresh()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url, "pool_size": 10},
        auth={"jwt_secret": secrets.token_urlsafe(32)},
        http={"public_url": "http://forum.test"},
        video=VIDEO,
        # Nothing listens there: mail waits in the outbox unless a test brings an SMTP server.
        mail={"host": "127.0.0.1", "port": 9},
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> Any:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def api(client: Any, settings: Settings) -> ApiClient:
    """The API as the secretariat uses it."""
    return ApiClient(client, token_for(settings, "secretariat", "sekretariatet"))


@pytest.fixture
def viewer(client: Any, settings: Settings) -> ApiClient:
    return ApiClient(client, token_for(settings, "viewer", "läsare"))


@pytest.fixture
async def world(api: ApiClient) -> dict[str, Any]:
    """Two sites, three rooms and a forum: what most booking tests start from."""
    sthlm = await api.ok("POST", "/api/v1/sites", {"name": "Stockholmskontoret", "city": "Stockholm"})
    ost = await api.ok("POST", "/api/v1/sites", {"name": "Östersundskontoret", "city": "Östersund"})
    rooms = {}
    for name, site in (("Tillväxten", sthlm), ("Storsjön", ost), ("Utvecklingen", sthlm)):
        rooms[name] = await api.ok("POST", "/api/v1/rooms", {"site_id": site["id"], "name": name, "capacity": 10})
    forum = await api.ok("POST", "/api/v1/forums", {
        "name": "Forum för regional hållbar tillväxt och attraktivitet", "kind": "officials"})
    return {"sites": {"Stockholm": sthlm, "Östersund": ost}, "rooms": rooms, "forum": forum}


def meeting_body(world: dict[str, Any], *rooms: str, start: str = "2027-04-05T09:00:00", end: str = "2027-04-05T12:00:00", **extra: Any) -> dict[str, Any]:
    body = {
        "forum_id": world["forum"]["id"],
        "title": "Forummöte",
        "starts_at": start,
        "ends_at": end,
        "room_ids": [world["rooms"][r]["id"] for r in rooms],
    }
    body.update(extra)
    return body
