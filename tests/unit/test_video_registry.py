"""The video port itself: the registry by short name, config errors, and the value types' rules."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connectors.video import (
    PROVIDERS,
    BigBlueButtonProvider,
    JitsiProvider,
    MeetingInfo,
    PresenceEvent,
    StaticProvider,
    VideoProvider,
    make_provider,
)

START = datetime(2027, 4, 5, 7, 0, tzinfo=timezone.utc)
END = datetime(2027, 4, 5, 10, 0, tzinfo=timezone.utc)
JITSI = {"url": "https://meet.example.org", "app_id": "forumbridge", "app_secret": "s" * 40,
         "audience": "forumbridge", "subject": "meet.example.org", "webhook_token": "t"}
BBB = {"url": "https://bbb.example.org/bigbluebutton/api", "secret": "x" * 32, "checksum": "sha256"}


def test_every_provider_is_registered_under_the_name_it_reports():
    assert PROVIDERS == {"static": StaticProvider, "jitsi": JitsiProvider, "bigbluebutton": BigBlueButtonProvider}
    for name, cls in PROVIDERS.items():
        assert cls.name == name


@pytest.mark.parametrize("name, config", [("static", {}), ("jitsi", JITSI), ("bigbluebutton", BBB)])
def test_make_provider_builds_each_from_its_section(name, config):
    provider = make_provider(name, config)
    assert isinstance(provider, VideoProvider) and provider.name == name


@pytest.mark.parametrize("name, config, named", [
    ("zoom", {}, "zoom"),
    ("jitsi", {k: v for k, v in JITSI.items() if k != "url"}, "url"),
    ("jitsi", {**JITSI, "secret": "x"}, "secret"),
    ("jitsi", {**JITSI, "grace_minutes": "half an hour"}, "grace_minutes"),
    ("jitsi", {**JITSI, "app_id": 7}, "app_id"),
    ("jitsi", {**JITSI, "private_key_file": "/nonexistent/key.pem", "algorithm": "RS256", "kid": "k"},
     "private_key_file"),
    ("bigbluebutton", {k: v for k, v in BBB.items() if k != "secret"}, "secret"),
    ("bigbluebutton", {**BBB, "checksum": "md5"}, "checksum"),
    ("bigbluebutton", {**BBB, "webhook_checksums": ["crc32"]}, "webhook_checksums"),
    ("bigbluebutton", {**BBB, "timeout_s": 0}, "timeout"),
])
def test_a_configuration_error_names_the_option(name, config, named):
    with pytest.raises(ValueError, match=named):
        make_provider(name, config)


def test_environment_overrides_given_as_text_are_understood():
    provider = make_provider("bigbluebutton", {**BBB, "timeout_s": "2.5", "webhook_checksums": "sha256, sha512"})
    assert provider.timeout == 2.5
    assert provider.webhook_algorithms == {"sha256", "sha512"}


@pytest.mark.parametrize("starts_at, ends_at", [
    (datetime(2027, 4, 5, 9, 0), END),
    (START, datetime(2027, 4, 5, 12, 0)),
    (END, START),
])
def test_a_meeting_needs_aware_times_in_order(starts_at, ends_at):
    with pytest.raises(ValueError):
        MeetingInfo(meeting_id="m", title="t", starts_at=starts_at, ends_at=ends_at, room_key="k")


def test_a_presence_event_needs_an_aware_time_and_a_known_kind():
    with pytest.raises(ValueError):
        PresenceEvent(invitation_id="i", kind="joined", at=datetime(2027, 4, 5, 9, 0), dedup_key="k", source="jitsi")
    with pytest.raises(ValueError):
        PresenceEvent(invitation_id="i", kind="opened",  # type: ignore[arg-type]
                      at=START, dedup_key="k", source="jitsi")
