"""The one settings object: defaults file, an operator's file, then the environment."""
from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_FILE = ROOT / "config" / "forumbridge.toml"
ENV_PREFIX = "FORUMBRIDGE_"


class Section(BaseModel):
    """A section of the file: a misspelt option is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class HttpSettings(Section):
    host: str = Field("127.0.0.1", description="Address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on")
    public_url: str = Field("http://127.0.0.1:8080", pattern=r"^https?://", description="Base of join links and feeds")
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="Larger request bodies get a 413")
    shutdown_timeout_s: float = Field(10.0, ge=0, description="Grace period for requests on SIGTERM")
    workers: int = Field(1, ge=1, le=64, description="Server processes on one port (more than one: PostgreSQL only)")


class DatabaseSettings(Section):
    url: str = Field("sqlite+aiosqlite:///var/forumbridge.db", pattern=r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://")
    pool_size: int = Field(10, ge=1, le=200, description="PostgreSQL connections per process")
    # Without these a database behind a network that drops packets holds requests for minutes.
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="Give up opening a PostgreSQL connection after this long")
    command_timeout_s: float = Field(30.0, gt=0, le=3600, description="Give up on one PostgreSQL statement after this long")
    echo: bool = False


class AuthSettings(Section):
    jwt_secret: str = Field("", description="HS256 secret; empty: generated and kept in the data folder")
    jwt_public_key: str = Field("", description="PEM public key for RS256/ES256 tokens")
    jwks_url: str = Field("", description="JWKS URL of the identity provider")
    issuer: str = "forumbridge"
    audience: str = "forumbridge"
    leeway_s: int = Field(30, ge=0, le=600, description="Clock skew allowed on exp/nbf")


class JoinSettings(Section):
    grace_minutes: int = Field(120, ge=0, le=7 * 24 * 60, description="How long a join link works after its meeting ends")
    early_minutes: int = Field(30, ge=0, le=24 * 60, description="How early before the meeting the video link opens")
    link_secret: str = Field("", description="The key join links are derived from; empty: generated and kept in "
                                             "the data folder. Replicas must share it")


class OrganizerSettings(Section):
    name: str = "Forum secretariat"
    email: str = "forum@example.org"


class CalendarAccount(Section):
    url: str
    username: str = ""
    password: str = ""
    verify_tls: bool = True


class CalendarSettings(Section):
    sync_interval_s: float = Field(60, gt=0)
    client_changes: Literal["apply", "revert"] = "apply"
    accounts: list[CalendarAccount] = []


class MailSettings(Section):
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str = ""
    password: str = ""
    sender: str = "Forum secretariat <forum@example.org>"


class Settings(BaseSettings):
    """Every option of the service; see config/forumbridge.toml for the documented defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("var"), description="Where generated secrets and the SQLite file live")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    http: HttpSettings = HttpSettings()
    database: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    organizer: OrganizerSettings = OrganizerSettings()
    join: JoinSettings = JoinSettings()
    calendar: CalendarSettings = CalendarSettings()
    mail: MailSettings = MailSettings()
    video: dict[str, dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Files are merged by load_settings and passed as init values; the
        # environment wins over them.
        return (env_settings, init_settings)


class SettingsError(Exception):
    """A bad option: names it and where its value came from."""


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise SettingsError(f"configuration file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from exc


def _has(data: dict, loc: tuple) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _origin(loc: tuple, env: dict[str, str], layers: list[tuple[str, dict]]) -> str:
    for n in range(len(loc), 0, -1):
        name = ENV_PREFIX + "__".join(str(p) for p in loc[:n]).upper()
        if name in env:
            return f"environment variable {name}"
    for label, data in reversed(layers):
        if _has(data, loc):
            return label
    return "built-in default"


def load_settings(config_file: str | os.PathLike | None = None) -> Settings:
    """Build the settings from the defaults file, `config_file` (or FORUMBRIDGE_CONFIG) and the environment."""
    env = dict(os.environ)
    layers: list[tuple[str, dict]] = []
    if DEFAULTS_FILE.exists():
        layers.append((f"file {DEFAULTS_FILE}", _read_toml(DEFAULTS_FILE)))
    chosen = config_file or env.get(ENV_PREFIX + "CONFIG")
    if chosen:
        layers.append((f"file {Path(chosen)}", _read_toml(Path(chosen))))
    merged: dict = {}
    for _, data in layers:
        merged = _deep_merge(merged, data)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            option = ".".join(str(p) for p in loc)
            lines.append(f"option {option}: {err['msg']} (from {_origin(loc, env, layers)})")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def sqlite_path(settings: Settings) -> Path | None:
    url = settings.database.url
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1]
    return None if path in ("", ":memory:") else Path(path)


def jwt_secret(settings: Settings) -> str:
    """The HS256 secret: configured, or generated once and kept in the data folder."""
    if settings.auth.jwt_secret:
        return settings.auth.jwt_secret
    return kept_secret(settings, "jwt_secret")


def kept_secret(settings: Settings, name: str) -> str:
    """A random secret generated on first use and kept in the data folder (mode 0600)."""
    path = settings.data_dir / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # O_EXCL: when two processes start together, one secret wins and both use it.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
