"""The demo forum of the case: a Stockholm meeting room, an Östersund video room, Swedish names."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import func, select

from schemas import api
from service.container import Services
from service.db import models as m
from service.usecases.base import Actor

ACTOR = Actor("seed-demo", frozenset({"secretariat"}))
FORUM = "Forum för regional hållbar tillväxt och attraktivitet"

PEOPLE = [
    ("Åsa Öberg", "asa.oberg@regeringskansliet.example", "Regeringskansliet", None),
    ("Jörgen Ångström", "jorgen.angstrom@regionjh.example", "Region Jämtland Härjedalen", "Jämtland Härjedalen"),
    ("Märta Lindqvist", "marta.lindqvist@tillvaxtverket.example", "Tillväxtverket", None),
    ("Björn Sjöström", "bjorn.sjostrom@regionvasterbotten.example", "Region Västerbotten", "Västerbotten"),
    ("Ingrid Åkesson", "ingrid.akesson@norrbotten.example", "Region Norrbotten", "Norrbotten"),
    ("Sören Ekdahl", "soren.ekdahl@skr.example", "Sveriges Kommuner och Regioner", None),
]

SESSIONS = [
    ("Inledning och läget i regionerna", "Välkommen; aktuellt från Regeringskansliet", "09:00", "09:30"),
    ("Kompetensförsörjning", "Regionernas arbete med kompetensförsörjning och vuxenutbildning", "09:30", "11:00"),
    ("Attraktiva livsmiljöer", "Boende, service och kultur på landsbygden", "11:00", "12:00"),
    ("Hållbar omställning i näringslivet", "Gröna investeringar i norra Sverige; påverkan på bostäder", "13:00", "14:30"),
    ("Avslutning och nästa möte", None, "14:30", "15:00"),
]


def next_fifth_of_april(today: date) -> date:
    this_year = date(today.year, 4, 5)
    return this_year if this_year >= today else date(today.year + 1, 4, 5)


async def is_empty(svc: Services) -> bool:
    async with svc.db.session(write=False) as s:
        return (await s.scalar(select(func.count()).select_from(m.Forum))) == 0


async def seed(svc: Services, today: date | None = None) -> dict[str, str]:
    """Load the demo forum; returns the ids a first request needs."""
    d = svc.directory
    sthlm = await d.sites.create(ACTOR, {"name": "Stockholmskontoret", "city": "Stockholm", "timezone": "Europe/Stockholm"})
    ost = await d.sites.create(ACTOR, {"name": "Östersundskontoret", "city": "Östersund", "timezone": "Europe/Stockholm"})
    tillvaxten = await d.rooms.create(ACTOR, {
        "site_id": sthlm.id, "name": "Tillväxten", "capacity": 24, "equipment": ["projektor", "videokonferens"],
        "video_endpoint": "sip:tillvaxten@video.example.org", "calendar_url": None})
    storsjon = await d.rooms.create(ACTOR, {
        "site_id": ost.id, "name": "Videorummet Storsjön", "capacity": 8, "equipment": ["videokonferens"],
        "video_endpoint": "sip:storsjon@video.example.org", "calendar_url": None})
    await d.forums.create(ACTOR, {"name": f"{FORUM} – politisk nivå", "kind": "political", "calendar_url": None})
    officials = await d.forums.create(ACTOR, {
        "name": f"{FORUM} – tjänstepersonsnivå", "kind": "officials", "calendar_url": None})
    people = [
        await d.people.create(ACTOR, {"name": n, "email": e, "organisation": o, "region": r}) for n, e, o, r in PEOPLE
    ]
    day = next_fifth_of_april(today or date.today())

    def at(hhmm: str) -> datetime:
        return datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time())

    meeting = await svc.meetings.create(ACTOR, api.MeetingCreate(
        forum_id=officials.id,
        title="Forummöte 5 april: regional tillväxt och attraktivitet",
        description="Hybridmöte i Tillväxten, Stockholm, med Östersundskontoret uppkopplat.",
        starts_at=at("09:00"), ends_at=at("15:00"), timezone="Europe/Stockholm",
        room_ids=[tillvaxten.id, storsjon.id],
        sessions=[api.SessionIn(title=t, topic=tp, starts_at=at(a), ends_at=at(b)) for t, tp, a, b in SESSIONS],
    ))
    s = meeting.sessions
    invites = [
        (people[0], "in_room", sthlm.id, None),
        (people[1], "in_room", ost.id, [s[1].id, s[2].id]),
        (people[2], "in_room", sthlm.id, None),
        (people[3], "remote", None, [s[1].id]),
        (people[4], "remote", None, [s[3].id]),
        (people[5], "remote", None, [s[2].id, s[3].id]),
    ]
    for person, mode, site, sessions in invites:
        await svc.invitations.create(ACTOR, meeting.id, api.InvitationCreate(
            person_id=person.id, mode=mode, site_id=site, session_ids=sessions))
    return {"meeting_id": str(meeting.id), "forum_id": str(officials.id), "room_id": str(tillvaxten.id)}


