"""The whole case over HTTP: a Stockholm meeting, Östersund linked, three remote experts, who followed what."""
from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.conftest import VIDEO, meeting_body
from tests.support.http import ApiClient
from tests.support.jitsi_verifier import JitsiTokenVerifier

HOOK = {"Authorization": f"Bearer {VIDEO['jitsi']['webhook_token']}"}


async def drain(api: ApiClient) -> None:
    """Run every outbox job that is due (the conference is made through the outbox)."""
    for _ in range(20):
        result = await api.ok("POST", "/api/v1/calendars/sync", status=200)
        if result["jobs_run"] == 0:
            return


def stamp(value: datetime) -> int:
    return int(value.timestamp())


async def occupant(client: Any, kind: str, room: str, invitation_id: str, name: str, when: datetime,
                   headers: dict[str, str] = HOOK) -> Any:
    field = "joined_at" if kind == "joined" else "left_at"
    body = {"event_name": f"muc-occupant-{kind}", "room_name": room, "is_breakout": False,
            "occupant": {"occupant_jid": f"{room}@conference.meet.forum.test/{invitation_id[:8]}",
                         "id": invitation_id, "name": name, "email": f"{invitation_id[:6]}@x.example", field: stamp(when)}}
    return await client.post(f"/webhooks/jitsi/events/occupant/{kind}", data=json.dumps(body),
                             headers={**headers, "Content-Type": "application/json"})


async def test_three_remote_experts_and_who_followed_which_session(api, world, client) -> None:
    # The meeting ran this morning: 3 hours, three sessions of an hour, ended 30 minutes ago.
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=30)
    start = end - timedelta(hours=3)
    hour = timedelta(hours=1)
    sessions = [{"title": t, "starts_at": (start + i * hour).isoformat(), "ends_at": (start + (i + 1) * hour).isoformat()}
                for i, t in enumerate(["Kompetensförsörjning", "Attraktiva livsmiljöer", "Hållbar omställning"])]
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", "Storsjön", start=start.isoformat(), end=end.isoformat(),
        title="Forummöte om regional tillväxt", conference={"provider": "jitsi"}, sessions=sessions))
    s1, s2, s3 = (s["id"] for s in meeting["sessions"])
    for _ in range(50):  # the background worker may hold the job while drain() runs
        await drain(api)
        conference = (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}"))["conference"]
        if conference["status"] == "active":
            break
        await asyncio.sleep(0.1)
    assert conference["status"] == "active"
    room = conference["host_url"].rsplit("/", 1)[1]

    experts = {}
    for name, expected in (("Märta Lindqvist", [s1]), ("Björn Sjöström", [s2, s3]), ("Ingrid Åkesson", [s3])):
        person = await api.ok("POST", "/api/v1/people", {"name": name, "email": f"{name.split()[1].lower().encode('ascii', 'ignore').decode()}@region.example"})
        inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                           {"person_id": person["id"], "mode": "remote", "session_ids": expected})
        experts[name] = inv
    in_room = await api.ok("POST", "/api/v1/people", {"name": "Jörgen Ångström", "email": "jorgen@region.example"})
    await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                 {"person_id": in_room["id"], "mode": "in_room", "site_id": world["sites"]["Östersund"]["id"]})

    # Märta opens her link: recorded, and forwarded to her own Jitsi URL.
    marta = experts["Märta Lindqvist"]
    join_path = urlsplit(marta["join_url"]).path + "/join"
    async with client.get(join_path, allow_redirects=False) as resp:
        assert resp.status == 302
        target = resp.headers["Location"]
    assert target.startswith(f"https://meet.forum.test/{room}?jwt=")
    token = parse_qs(urlsplit(target).query)["jwt"][0]
    cfg = VIDEO["jitsi"]
    verifier = JitsiTokenVerifier(app_id=cfg["app_id"], app_secret=cfg["app_secret"], accepted_audiences=[cfg["audience"]],
                                  domain=cfg["subject"])
    claims = verifier.admit(token, room)
    assert claims["context"]["user"]["id"] == marta["id"]

    # Presence from the event-sync webhook: Märta the first 45 minutes; Björn leaves early and comes back;
    # Ingrid never joins. Sent out of order, one of them twice.
    bjorn = experts["Björn Sjöström"]
    events = [
        ("left", marta, start + timedelta(minutes=50)),
        ("joined", bjorn, start + timedelta(minutes=100)),
        ("joined", marta, start + timedelta(minutes=5)),
        ("left", bjorn, start + timedelta(minutes=90)),
        ("joined", bjorn, start + timedelta(minutes=60)),
        ("left", bjorn, start + timedelta(minutes=175)),
        ("joined", marta, start + timedelta(minutes=5)),
    ]
    for kind, inv, when in events:
        resp = await occupant(client, kind, room, inv["id"], "x", when)
        assert resp.status == 200, await resp.text()

    report = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}/attendance")
    table = {(r["name"], r["session"]): (r["expected"], r["present"], r["minutes"]) for r in report["rows"]}
    assert table[("Märta Lindqvist", "Kompetensförsörjning")] == (True, True, 45.0)
    assert table[("Märta Lindqvist", "Attraktiva livsmiljöer")] == (False, False, 0.0)
    assert table[("Björn Sjöström", "Kompetensförsörjning")] == (False, False, 0.0)
    assert table[("Björn Sjöström", "Attraktiva livsmiljöer")] == (True, True, 50.0)
    assert table[("Björn Sjöström", "Hållbar omställning")] == (True, True, 55.0)
    assert table[("Ingrid Åkesson", "Hållbar omställning")] == (True, False, 0.0)
    assert table[("Jörgen Ångström", "Hållbar omställning")] == (True, False, 0.0)
    bjorn_s2 = next(r for r in report["rows"] if r["name"] == "Björn Sjöström" and r["session"] == "Attraktiva livsmiljöer")
    assert bjorn_s2["source"] == "jitsi" and not bjorn_s2["estimated"]
    assert datetime.fromisoformat(bjorn_s2["first_join"]) == start + timedelta(minutes=60)
    summary = {s["session"]: (s["remote_expected"], s["remote_present"]) for s in report["sessions"]}
    assert summary == {"Kompetensförsörjning": (1, 1), "Attraktiva livsmiljöer": (1, 1), "Hållbar omställning": (2, 1)}

    # The same as CSV, as a spreadsheet reads it.
    async with client.get(f"/api/v1/meetings/{meeting['id']}/attendance",
                          headers={"Authorization": f"Bearer {api.token}", "Accept": "text/csv"}) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        raw = await resp.read()
    assert raw.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    by_key = {(r["name"], r["session"]): r for r in rows}
    assert by_key[("Björn Sjöström", "Hållbar omställning")]["minutes"] == "55.0"
    assert by_key[("Ingrid Åkesson", "Hållbar omställning")]["present"] == "no"
    assert len(rows) == 4 * 3


async def test_a_webhook_with_a_wrong_token_is_refused_and_records_nothing(api, world, client) -> None:
    end = datetime.now(timezone.utc) - timedelta(minutes=10)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(
        world, "Tillväxten", start=(end - timedelta(hours=1)).isoformat(), end=end.isoformat(),
        conference={"provider": "jitsi"}))
    person = await api.ok("POST", "/api/v1/people", {"name": "Sören Ekdahl", "email": "soren@skr.example"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations", {"person_id": person["id"], "mode": "remote"})
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = await occupant(client, "joined", "room", inv["id"], "Sören", end - timedelta(minutes=30), headers)
        assert resp.status == 401
    report = await api.ok("GET", f"/api/v1/meetings/{meeting['id']}/attendance")
    assert [r["present"] for r in report["rows"]] == [False]


async def test_the_secretariat_can_record_attendance_by_hand_and_it_is_audited(api, world) -> None:
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=10)
    start = end - timedelta(hours=1)
    meeting = await api.ok("POST", "/api/v1/meetings", meeting_body(world, "Tillväxten", start=start.isoformat(), end=end.isoformat()))
    person = await api.ok("POST", "/api/v1/people", {"name": "Åsa Öberg", "email": "asa@rk.example"})
    inv = await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/invitations",
                       {"person_id": person["id"], "mode": "in_room", "site_id": world["sites"]["Stockholm"]["id"]})
    for kind, minute in (("joined", 0), ("left", 40)):
        await api.ok("POST", f"/api/v1/meetings/{meeting['id']}/attendance",
                     {"invitation_id": inv["id"], "kind": kind, "at": (start + timedelta(minutes=minute)).isoformat()})
    [row] = (await api.ok("GET", f"/api/v1/meetings/{meeting['id']}/attendance"))["rows"]
    assert (row["present"], row["minutes"], row["source"]) == (True, 40.0, "manual")
    log = await api.ok("GET", f"/api/v1/audit?entity=invitation&entity_id={inv['id']}")
    assert [e["action"] for e in log["items"]].count("attendance_recorded") == 2
    code, body = await api.post(f"/api/v1/meetings/{meeting['id']}/attendance",
                                {"invitation_id": meeting["id"], "kind": "joined", "at": start.isoformat()})
    assert code == 422 and body["errors"][0]["field"] == "invitation_id"
