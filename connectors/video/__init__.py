"""Video connectors: the port, its exceptions, and the providers by short name."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors.video.base import (
    ConferenceInfo,
    MeetingInfo,
    Participant,
    PresenceEvent,
    VideoProvider,
    WebhookRequest,
)
from connectors.video.bigbluebutton import BigBlueButtonProvider
from connectors.video.errors import VideoAuthError, VideoError, VideoRejected, VideoUnavailable
from connectors.video.jitsi import JitsiProvider
from connectors.video.static import StaticProvider, VirtualRoom

# The short names used in configuration ([video.NAME]) and in ConferenceInfo.provider.
PROVIDERS: dict[str, type[Any]] = {
    StaticProvider.name: StaticProvider,
    JitsiProvider.name: JitsiProvider,
    BigBlueButtonProvider.name: BigBlueButtonProvider,
}


class _Options:
    """Reads one [video.NAME] section: every option named in errors, unknown ones refused."""

    def __init__(self, section: str, config: Mapping[str, Any], known: set[str]) -> None:
        self.section = section
        self.config = dict(config)
        unknown = set(self.config) - known
        if unknown:
            raise ValueError(f"[{section}]: unknown option(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")

    def text(self, name: str, default: str | None = None) -> str:
        value = self.config.get(name, default)
        if value is None:
            raise ValueError(f"[{self.section}] {name} is required")
        if not isinstance(value, str):
            raise ValueError(f"[{self.section}] {name} must be a string, got {type(value).__name__}")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.config.get(name)
        return None if value in (None, "") else self.text(name)

    def number(self, name: str, default: float) -> float:
        value = self.config.get(name, default)
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # a string from an environment override is fine
        except (TypeError, ValueError):
            raise ValueError(f"[{self.section}] {name} must be a number, got {value!r}") from None

    def minutes(self, name: str, default: float) -> timedelta:
        return timedelta(minutes=self.number(name, default))

    def names(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.config.get(name, default)
        if isinstance(value, str):  # "sha1,sha256" from an environment override
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"[{self.section}] {name} must be a list of names, got {value!r}")
        return tuple(value)


def _static(opts: Mapping[str, Any], extra: dict[str, Any]) -> StaticProvider:
    rooms = opts.get("rooms")
    if rooms is None:  # the rooms written directly as [video.static."KEY"] tables
        rooms = {k: v for k, v in opts.items() if isinstance(v, Mapping)}
        stray = sorted(k for k, v in opts.items() if not isinstance(v, Mapping))
        if stray:
            raise ValueError(f"[video.static]: unknown option(s) {', '.join(stray)} (known: rooms)")
    elif not isinstance(rooms, Mapping) or len(opts) > 1:
        raise ValueError("[video.static]: only 'rooms', a table of KEY = {web_url, sip_uri}, is known")
    return StaticProvider(rooms, **extra)


def _jitsi(config: Mapping[str, Any], extra: dict[str, Any]) -> JitsiProvider:
    o = _Options("video.jitsi", config, {
        "url", "app_id", "app_secret", "audience", "subject", "webhook_token", "grace_minutes",
        "early_minutes", "algorithm", "private_key", "private_key_file", "kid"})
    private_key = o.optional_text("private_key")
    key_file = o.optional_text("private_key_file")
    if key_file and not private_key:
        try:
            private_key = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"[video.jitsi] private_key_file {key_file!r}: {exc.strerror}") from None
    app_id = o.text("app_id")
    return JitsiProvider(
        url=o.text("url"), app_id=app_id, app_secret=o.text("app_secret", ""),
        audience=o.text("audience", app_id), subject=o.text("subject"),
        webhook_token=o.text("webhook_token", ""), grace=o.minutes("grace_minutes", 30),
        early=o.minutes("early_minutes", 15), algorithm=o.text("algorithm", "HS256"),
        private_key=private_key, kid=o.optional_text("kid"), **extra)


def _bigbluebutton(config: Mapping[str, Any], extra: dict[str, Any]) -> BigBlueButtonProvider:
    o = _Options("video.bigbluebutton", config, {
        "url", "secret", "checksum", "timeout_s", "grace_minutes", "webhook_checksums", "callback_url",
        "end_callback_url"})
    return BigBlueButtonProvider(
        url=o.text("url"), secret=o.text("secret"), checksum=o.text("checksum", "sha256"),
        timeout=o.number("timeout_s", 10), grace=o.minutes("grace_minutes", 30),
        webhook_checksums=o.names("webhook_checksums", ("sha1", "sha256")),
        callback_url=o.optional_text("callback_url"), end_callback_url=o.optional_text("end_callback_url"),
        **extra)


_BUILDERS: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], Any]] = {
    "static": _static, "jitsi": _jitsi, "bigbluebutton": _bigbluebutton,
}


def make_provider(name: str, config: Mapping[str, Any] | None = None, **options: Any) -> VideoProvider:
    """The provider registered as `name`, built from its [video.NAME] config section.

    `options` go to the constructor as they are: things that are not configuration, such as
    `session_factory` or `clock`. Raises ValueError naming the section and option when the
    configuration is wrong.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"unknown video provider {name!r} (known: {known})") from None
    return builder(config or {}, options)


__all__ = [
    "PROVIDERS", "make_provider",
    "MeetingInfo", "ConferenceInfo", "Participant", "PresenceEvent", "WebhookRequest", "VideoProvider",
    "StaticProvider", "VirtualRoom", "JitsiProvider", "BigBlueButtonProvider",
    "VideoError", "VideoAuthError", "VideoUnavailable", "VideoRejected",
]
