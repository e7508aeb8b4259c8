"""Requests that race for the same row: the loser gets a 409 naming the field, never a 500.

Each use case checks a key first (an email taken, a person invited already, a forum that exists)
and then writes; on PostgreSQL under READ COMMITTED two requests can both pass the check, and the
database refuses the second. On SQLite writers take turns and the check itself refuses it."""
from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import meeting_body
from tests.support.http import ApiClient


async def test_the_same_person_created_at_once_is_made_once_and_the_others_are_told(api: ApiClient) -> None:
    for round_ in range(4):
        body = {"name": "Åsa Öberg", "email": f"asa{round_}@regeringen.example"}
        answers = await asyncio.gather(*(api.post("/api/v1/people", body) for _ in range(8)))
        assert sorted(status for status, _ in answers) == [201] + [409] * 7, answers
        assert all("email" in str(body) for status, body in answers if status == 409), answers


async def test_the_same_invitation_made_at_once_is_made_once(api: ApiClient, world: dict[str, Any]) -> None:
    for round_ in range(4):
        meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, start=f"2027-05-0{round_ + 1}T09:00:00", end=f"2027-05-0{round_ + 1}T10:00:00"))
        person = await api.ok("POST", "/api/v1/people", {"name": "Björn", "email": f"bjorn{round_}@region.example"})
        answers = await asyncio.gather(*(api.post(f"/api/v1/meetings/{meeting['id']}/invitations", {
            "person_id": person["id"], "mode": "remote"}) for _ in range(8)))
        assert sorted(status for status, _ in answers) == [201] + [409] * 7, answers
        assert len((await api.ok("GET", f"/api/v1/meetings/{meeting['id']}/invitations"))["items"]) == 1


async def test_a_meeting_booked_while_its_forum_is_deleted_is_one_or_the_other(
        api: ApiClient, world: dict[str, Any]) -> None:
    for round_ in range(6):
        forum = await api.ok("POST", "/api/v1/forums", {"name": f"Forum {round_}", "kind": "political"})
        body = {**meeting_body(world, start=f"2027-06-0{round_ + 1}T09:00:00", end=f"2027-06-0{round_ + 1}T10:00:00"),
                "forum_id": forum["id"]}
        (booked, _), (deleted, _) = await asyncio.gather(api.post("/api/v1/meetings", body),
                                                         api.delete(f"/api/v1/forums/{forum['id']}"))
        assert 500 not in (booked, deleted) and booked in (201, 404, 409, 422) and deleted in (204, 409), (booked, deleted)
        assert (booked == 201) != (deleted == 204), (booked, deleted)


async def test_an_invitation_made_while_its_session_is_removed_never_names_the_removed_session(
        api: ApiClient, world: dict[str, Any]) -> None:
    for round_ in range(6):
        day = f"2027-07-{round_ + 1:02d}"
        meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
            world, start=f"{day}T09:00:00", end=f"{day}T12:00:00",
            sessions=[{"title": "Kompetensförsörjning", "starts_at": f"{day}T09:00:00", "ends_at": f"{day}T10:00:00"},
                      {"title": "Hållbar omställning", "starts_at": f"{day}T10:00:00", "ends_at": f"{day}T11:00:00"}]))
        first = meeting["sessions"][0]["id"]
        person = await api.ok("POST", "/api/v1/people", {"name": "Ingrid Åkesson", "email": f"ingrid{round_}@region.example"})
        (invited, invitation), (removed, _) = await asyncio.gather(
            api.post(f"/api/v1/meetings/{meeting['id']}/invitations",
                     {"person_id": person["id"], "mode": "remote", "session_ids": [first]}),
            api.delete(f"/api/v1/meetings/{meeting['id']}/sessions/{first}"))
        assert removed == 204 and invited in (201, 422), (invited, invitation)
        if invited == 201:
            sessions = {s["id"] for s in (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["sessions"]}
            named = (await api.ok("GET", f"/api/v1/invitations/{invitation['id']}"))["session_ids"]
            assert set(named or ()) <= sessions, (named, sessions)
