"""The participant's pages behind a personal join link (HTML, Swedish or English)."""
from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from service.http.i18n import TEXTS, choose
from service.keys import SERVICES
from service.links import plausible
from service.participation.errors import LinkGone, LinkUnknown, NoVideo

ANSWERS = ("accepted", "tentative", "declined")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
JOIN_REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
MONTHS = {
    "sv": ["januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september", "oktober",
           "november", "december"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
}
WEEKDAYS = {"sv": ["måndag", "tisdag", "onsdag", "torsdag", "fredag", "lördag", "söndag"],
            "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]}

ENV = Environment(loader=PackageLoader("service", "templates"), autoescape=select_autoescape(["html"]))


def _lang(request: web.Request) -> str:
    return choose(request.headers.get("Accept-Language", ""), request.query.get("lang"))


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)


def _problem_page(request: web.Request, exc: Exception) -> web.Response:
    lang = _lang(request)
    t = TEXTS[lang]
    org = request.app[SERVICES].settings.organizer
    if isinstance(exc, LinkGone):
        heading, message, status = t["gone_title"], t["gone"].format(organizer=org.name, email=org.email), 410
    elif isinstance(exc, NoVideo):
        heading, message, status = t["novideo_title"], str(exc), exc.status
    else:
        heading, message, status = t["unknown_title"], t["unknown"], 404
    return _html(ENV.get_template("problem.html").render(lang=lang, heading=heading, message=message), status)


async def participant(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    token = request.match_info["token"]
    try:
        view = await svc.links.view(token)
    except (LinkUnknown, LinkGone) as exc:
        return _problem_page(request, exc)
    lang = _lang(request)
    zone = ZoneInfo(view.timezone)

    def fmt_time(value: datetime) -> str:
        return value.astimezone(zone).strftime("%H:%M")

    def fmt_day(value: datetime) -> str:
        local = value.astimezone(zone)
        return f"{WEEKDAYS[lang][local.weekday()]} {local.day} {MONTHS[lang][local.month - 1]} {local.year}"

    body = ENV.get_template("participant.html").render(
        lang=lang, t=TEXTS[lang], v=view, base=f"/j/{token}", fmt_time=fmt_time, fmt_day=fmt_day,
        form_token=svc.link_keys.form_token(token, "rsvp"), saved=request.query.get("saved") == "1")
    return _html(body)


async def join(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    try:
        url = await svc.links.join(request.match_info["token"])
    except (LinkUnknown, LinkGone, NoVideo) as exc:
        return _problem_page(request, exc)
    # Returned, not raised: the hot path of the join benchmark, where raising web.HTTPFound
    # cost about 20 us per request more (building the exception's body, unwinding the middleware).
    return web.Response(status=302, headers=JOIN_REDIRECT_HEADERS | {"Location": url})


async def calendar(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    try:
        body = await svc.links.calendar(request.match_info["token"])
    except (LinkUnknown, LinkGone) as exc:
        return _problem_page(request, exc)
    return web.Response(body=body, content_type="text/calendar", charset="utf-8", headers={
        "Content-Disposition": 'attachment; filename="forummote.ics"', "Cache-Control": "no-store"})


def _same_origin(request: web.Request) -> bool:
    """A browser's form post from another site says so in Origin or Sec-Fetch-Site.

    The page is served with Referrer-Policy no-referrer, under which browsers send `Origin: null`
    even on a same-origin post; then Sec-Fetch-Site (which no page can set) must say same-origin.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site not in (None, "same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin == "null":
        return fetch_site == "same-origin"
    public = urlsplit(request.app[SERVICES].settings.http.public_url)
    allowed = {f"{public.scheme}://{public.netloc}", f"{request.scheme}://{request.host}"}
    return origin in allowed


async def rsvp(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    token = request.match_info["token"]
    if not plausible(token):
        # Junk is answered like every other unknown link, before the form is looked at.
        return _problem_page(request, LinkUnknown("no such link"))
    try:
        form = await request.post()
    except ValueError:  # bytes that are not UTF-8 (UnicodeDecodeError) or a malformed multipart body
        return _html(ENV.get_template("problem.html").render(
            lang=_lang(request), heading="400", message="The form could not be read."), 400)
    answer = str(form.get("answer", ""))
    lang = str(form.get("lang", "")) if form.get("lang") in TEXTS else _lang(request)
    if not _same_origin(request) or not svc.link_keys.check_form_token(token, "rsvp", str(form.get("form_token", ""))):
        return _html(ENV.get_template("problem.html").render(
            lang=lang, heading="403", message="The form did not come from this page."), 403)
    if answer not in ANSWERS:
        return _html(ENV.get_template("problem.html").render(lang=lang, heading="400", message="answer"), 400)
    try:
        await svc.links.rsvp(token, answer)
    except (LinkUnknown, LinkGone) as exc:
        return _problem_page(request, exc)
    raise web.HTTPSeeOther(f"/j/{token}?saved=1&lang={lang}")


def install(app: web.Application) -> None:
    app.router.add_get("/j/{token}", participant)
    app.router.add_get("/j/{token}/join", join)
    app.router.add_get("/j/{token}/calendar.ics", calendar)
    app.router.add_post("/j/{token}/rsvp", rsvp)
