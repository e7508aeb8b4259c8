"""For any text: a meeting's title and description come back as sent, and the forum's feed reads back the same.

The API keeps strings as sent (schemas.common.Wire). The iCalendar the service
writes applies service.calendar.ical.clean_text to every text value, and
nothing else: reading the feed back with icalendar gives exactly that.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings, strategies as st
from icalendar import Calendar

from service.calendar.ical import clean_text
from tests.support.http import ApiClient

# Any text, with the characters that matter here drawn often: line breaks of every
# kind, iCalendar's own separators and escapes, control characters, NUL.
NASTY = "\r\n\x0b\x0c\x1c\x85\u2028\u2029\\;,:\"\t\x00\x7f\ufeff"
texts = st.text(st.characters(codec="utf-8") | st.sampled_from(NASTY), max_size=80) | st.text(max_size=600)


def accepted(text: str, *, min_size: int, max_size: int) -> bool:
    """Whether the API takes `text` in a field of these bounds (no NUL: see schemas.common.Wire)."""
    return min_size <= len(text) <= max_size and "\x00" not in text


def feed_path(forum: dict[str, Any]) -> str:
    return urlsplit(forum["feed_url"]).path


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(title=texts, description=texts)
async def test_any_title_and_description_come_back_as_sent_and_read_back_from_the_feed(
    api: ApiClient, world: dict[str, Any], title: str, description: str
) -> None:
    forum = world["forum"]
    code, made = await api.post("/api/v1/meetings", {
        "forum_id": forum["id"], "title": title, "description": description,
        "starts_at": "2027-04-05T09:00:00", "ends_at": "2027-04-05T12:00:00"})
    if not (accepted(title, min_size=1, max_size=500) and accepted(description, min_size=0, max_size=4000)):
        assert code == 422, made
        return
    assert code == 201, made
    assert (made["title"], made["description"]) == (title, description)
    read = await api.ok("GET", f"/api/v1/meetings/{made['id']}")
    assert (read["title"], read["description"]) == (title, description)

    reply = await api.as_token(None).send("GET", feed_path(forum))
    assert reply.status == 200
    [event] = [e for e in Calendar.from_ical(reply.raw).walk("VEVENT") if str(e["UID"]) == made["uid"]]
    assert str(event["SUMMARY"]) == clean_text(title)
    # No rooms, sessions or conference: the description is the whole DESCRIPTION.
    assert str(event.get("DESCRIPTION", "")) == clean_text(description)
