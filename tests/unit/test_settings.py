"""Settings: the defaults file, an operator's file, the environment, and errors that say where."""
from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Iterator

import pytest

from service.settings import DEFAULTS_FILE, Settings, SettingsError, jwt_secret, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FORUMBRIDGE_ variable of the shell running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith("FORUMBRIDGE_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def options(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from options(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def value_of(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings.model_dump()
    for part in path:
        value = value[part]
    return str(value) if isinstance(value, Path) else value


def test_every_option_in_the_defaults_file_is_what_the_service_runs_with() -> None:
    settings = load_settings()
    documented = list(options(tomllib.loads(DEFAULTS_FILE.read_text())))
    assert len(documented) >= 20
    for path, value in documented:
        assert value_of(settings, path) == value, ".".join(path)


def test_a_config_file_overrides_the_defaults_option_by_option(tmp_path: Path) -> None:
    own = write(tmp_path / "site.toml", '[http]\nport = 9090\n\n[auth]\nissuer = "https://idp.example.se"\n')
    settings = load_settings(own)
    assert settings.http.port == 9090 and settings.auth.issuer == "https://idp.example.se"
    # What the file leaves out still comes from the defaults, even within the same section.
    assert settings.http.max_body_bytes == 2097152 and settings.auth.audience == "forumbridge"


@pytest.mark.parametrize("example", sorted(DEFAULTS_FILE.parent.glob("*.example.toml")), ids=lambda p: p.name)
def test_every_example_config_file_loads(example: Path) -> None:
    written = dict(options(tomllib.loads(example.read_text())))
    settings = load_settings(example)
    assert {path: value_of(settings, path) for path in written} == written


def test_the_config_file_can_be_named_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORUMBRIDGE_CONFIG", str(write(tmp_path / "env.toml", "[http]\nport = 9393\n")))
    assert load_settings().http.port == 9393


def test_the_environment_overrides_both_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = write(tmp_path / "site.toml", '[http]\nport = 9090\npublic_url = "https://forum.example.se"\n')
    monkeypatch.setenv("FORUMBRIDGE_HTTP__PORT", "9191")
    monkeypatch.setenv("FORUMBRIDGE_DATABASE__URL", "postgresql+asyncpg://forum@db.example.se/forum")
    settings = load_settings(own)
    assert settings.http.port == 9191
    assert settings.http.public_url == "https://forum.example.se"
    assert settings.database.url == "postgresql+asyncpg://forum@db.example.se/forum"


@pytest.mark.parametrize(("variable", "value", "option"), [
    ("FORUMBRIDGE_HTTP__PORT", "åttiåtti", "http.port"),
    ("FORUMBRIDGE_AUTH__LEEWAY_S", "-1", "auth.leeway_s"),
    ("FORUMBRIDGE_LOG_LEVEL", "CHATTY", "log_level"),
    ("FORUMBRIDGE_HTTP__PROT", "8081", "http.prot"),
])
def test_a_bad_value_from_the_environment_names_the_option_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, option: str
) -> None:
    # The file sets the same option: the message must still blame the environment.
    own = write(tmp_path / "site.toml", "log_level = \"DEBUG\"\n[http]\nport = 9090\n[auth]\nleeway_s = 5\n")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(own)
    assert option in str(caught.value) and variable in str(caught.value)


@pytest.mark.parametrize(("text", "option"), [
    ("[http]\nport = 70000\n", "http.port"),
    ('[database]\nurl = "mysql://forum@db/forum"\n', "database.url"),
    ('[calendar]\nclient_changes = "ignore"\n', "calendar.client_changes"),
    ("[http]\nprot = 8081\n", "http.prot"),
    ("[htttp]\nport = 8081\n", "htttp"),
])
def test_a_bad_option_in_a_file_names_the_option_and_the_file(tmp_path: Path, text: str, option: str) -> None:
    own = write(tmp_path / "site.toml", text)
    with pytest.raises(SettingsError) as caught:
        load_settings(own)
    assert option in str(caught.value) and str(own) in str(caught.value)


@pytest.mark.parametrize("text", ["[http\nport = 1\n", None])
def test_a_config_file_that_is_missing_or_not_toml_is_named(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "site.toml"
    if text is not None:
        write(path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def _settings(tmp_path: Path, secret: str = "") -> Settings:
    return Settings(data_dir=tmp_path / "data" / "nested", auth={"jwt_secret": secret})


def test_a_jwt_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    first = jwt_secret(settings)
    kept = settings.data_dir / "jwt_secret"
    assert len(first) >= 43
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert jwt_secret(settings) == first
    assert jwt_secret(_settings(tmp_path)) == first


def test_a_configured_jwt_secret_wins_and_nothing_is_written(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "a configured secret that is long enough")
    assert jwt_secret(settings) == "a configured secret that is long enough"
    assert not (settings.data_dir / "jwt_secret").exists()


def test_two_data_folders_get_two_secrets(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one", auth={"jwt_secret": ""})
    two = Settings(data_dir=tmp_path / "two", auth={"jwt_secret": ""})
    assert jwt_secret(one) != jwt_secret(two)


@pytest.mark.parametrize("example", sorted(DEFAULTS_FILE.parent.glob("*.example.toml")), ids=lambda p: p.name)
def test_the_app_starts_from_every_example_config_file(example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.app import create_app

    monkeypatch.setenv("FORUMBRIDGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FORUMBRIDGE_DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path}/x.db")
    app = create_app(load_settings(example))
    assert app.router.resources()


def test_a_bad_video_section_stops_start_up_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.app import create_app

    monkeypatch.setenv("FORUMBRIDGE_DATA_DIR", str(tmp_path))
    bad = write(tmp_path / "video.toml", '[video.jitsi]\nurl = "not a url"\napp_id = "x"\n')
    with pytest.raises(SettingsError, match="video.jitsi"):
        create_app(load_settings(bad))
