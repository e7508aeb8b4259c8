"""The forumbridge command as operators and scripts run it: a real process, its stdout and exit code."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from service.app import create_app
from service.http.auth import TokenVerifier, issue_token
from service.settings import jwt_secret, load_settings
from service.usecases.base import Actor
from tests.support.http import ApiClient

FORUMBRIDGE = Path(sys.executable).with_name("forumbridge")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A data folder and SQLite file of the test's own, for the subprocess and for this process alike."""
    for name in list(os.environ):
        if name.startswith("FORUMBRIDGE_"):
            monkeypatch.delenv(name)
    ours = {
        "FORUMBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "FORUMBRIDGE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path / 'forum.db'}",
    }
    for name, value in ours.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **ours}


def forumbridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FORUMBRIDGE), *args], env=env, cwd=Path(env["FORUMBRIDGE_DATA_DIR"]).parent,
                          capture_output=True, text=True, timeout=120)


async def test_token_prints_only_a_token_that_the_app_accepts(env: dict[str, str]) -> None:
    done = forumbridge(env, "token", "--sub", "x", "--role", "viewer")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n" and token.count(".") == 2
    settings = load_settings()
    actor = await TokenVerifier(settings, jwt_secret(settings)).verify(token)
    assert actor == Actor("x", frozenset({"viewer"}))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 8 * 3600


async def test_a_token_with_a_ttl_lives_that_long(env: dict[str, str]) -> None:
    done = forumbridge(env, "token", "--sub", "script", "--role", "secretariat", "--ttl", "30m")
    claims = jwt.decode(done.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 30 * 60 and claims["roles"] == ["secretariat"]


@pytest.mark.parametrize(("args", "extra_env", "says"), [
    (["token", "--sub", "x", "--role", "admin"], {}, "invalid choice"),
    (["token", "--sub", "x", "--role", "viewer", "--ttl", "forever"], {}, "--ttl"),
    (["token", "--sub", "x", "--role", "viewer"], {"FORUMBRIDGE_HTTP__PORT": "åttio"}, "FORUMBRIDGE_HTTP__PORT"),
])
def test_a_refused_command_prints_nothing_on_stdout_and_exits_2(env, args, extra_env, says) -> None:
    done = forumbridge({**env, **extra_env}, *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert says in done.stderr


@pytest.mark.parametrize("command", ["", "serve", "migrate", "token", "seed-demo"])
def test_every_subcommand_explains_itself(env: dict[str, str], command: str) -> None:
    done = forumbridge(env, *([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: forumbridge {command}".rstrip())


async def _everything(client: Any, settings: Any) -> dict[str, list[dict[str, Any]]]:
    api = ApiClient(client, issue_token(jwt_secret(settings), "test", "secretariat", timedelta(minutes=5),
                                        settings.auth.issuer, settings.auth.audience))
    return {kind: (await api.ok("GET", f"/api/v1/{kind}?limit=500"))["items"]
            for kind in ("sites", "rooms", "people", "forums", "meetings")}


async def test_migrate_and_seed_demo_load_the_forum_of_the_case_once(env: dict[str, str], aiohttp_client) -> None:
    assert forumbridge(env, "migrate").returncode == 0
    seeded = forumbridge(env, "seed-demo")
    assert seeded.returncode == 0, seeded.stderr
    meeting_id = str(uuid.UUID(seeded.stdout.strip()))
    settings = load_settings()
    client = await aiohttp_client(create_app(settings))
    loaded = await _everything(client, settings)
    forums = loaded["forums"]
    assert sorted(f["kind"] for f in forums) == ["officials", "political"]
    assert all(f["name"].startswith("Forum för regional hållbar tillväxt och attraktivitet") for f in forums)
    assert "Tillväxten" in {r["name"] for r in loaded["rooms"]}
    [meeting] = loaded["meetings"]
    assert meeting["id"] == meeting_id and meeting["starts_at"][5:10] == "04-05"
    assert meeting["starts_at"].endswith("T09:00:00+02:00") and meeting["timezone"] == "Europe/Stockholm"

    again = forumbridge(env, "seed-demo", "--if-empty")
    assert (again.returncode, again.stdout) == (0, "")
    assert await _everything(client, settings) == loaded


def test_serve_takes_the_start_up_objects_out_of_the_collectors_reach(env: dict[str, str]) -> None:
    """A full collection that scans every object start-up made held up the requests in flight for up to 0.5 s."""
    import gc

    from service.cli import freeze_startup_objects

    app = create_app(load_settings())
    gc.collect()
    tracked = len(gc.get_objects())  # what survives a collection: the app and everything else alive
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= tracked * 0.9
        assert len(gc.get_objects()) < tracked * 0.1
        assert app is not None
    finally:
        gc.unfreeze()
