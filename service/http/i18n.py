"""The participant pages' texts, in Swedish and English, chosen by Accept-Language."""
from __future__ import annotations

TEXTS = {
    "sv": {
        "hello": "Hej {name}",
        "your_sessions": "Dina pass",
        "all_sessions": "Hela mötet",
        "when": "När",
        "where": "Var",
        "remote": "På distans, med din personliga länk",
        "in_room": "På plats: {site}",
        "rooms": "Rum",
        "join": "Anslut till mötet",
        "join_help": "Knappen öppnar videomötet. Länken är personlig – dela den inte.",
        "no_video": "Mötet har ingen videolänk.",
        "calendar": "Lägg till i kalendern",
        "rsvp": "Ditt svar",
        "accepted": "Jag kommer",
        "declined": "Jag kommer inte",
        "tentative": "Kanske",
        "needs-action": "Inte svarat än",
        "current_answer": "Ditt svar just nu: {answer}",
        "saved": "Tack, ditt svar är sparat.",
        "cancelled": "Mötet är inställt.",
        "gone_title": "Länken gäller inte längre",
        "gone": "Länken har ersatts av en nyare eller har gått ut. Be sekretariatet om en ny länk: {organizer} ({email}).",
        "unknown_title": "Okänd länk",
        "unknown": "Vi hittar ingen inbjudan med den här länken. Kontrollera att hela länken kom med, eller kontakta sekretariatet.",
        "novideo_title": "Ingen videolänk än",
        "contact": "Frågor? Kontakta {organizer}, {email}.",
        "language": "In English",
        "other_lang": "en",
        "timezone": "Tider i {zone}",
    },
    "en": {
        "hello": "Hello {name}",
        "your_sessions": "Your sessions",
        "all_sessions": "The whole meeting",
        "when": "When",
        "where": "Where",
        "remote": "Remote, with your personal link",
        "in_room": "In person: {site}",
        "rooms": "Rooms",
        "join": "Join the meeting",
        "join_help": "The button opens the video meeting. The link is personal – do not share it.",
        "no_video": "This meeting has no video link.",
        "calendar": "Add to calendar",
        "rsvp": "Your answer",
        "accepted": "I will attend",
        "declined": "I will not attend",
        "tentative": "Maybe",
        "needs-action": "Not answered yet",
        "current_answer": "Your answer now: {answer}",
        "saved": "Thank you, your answer is saved.",
        "cancelled": "The meeting is cancelled.",
        "gone_title": "This link is no longer valid",
        "gone": "The link has been replaced by a newer one or has expired. Ask the secretariat for a new link: {organizer} ({email}).",
        "unknown_title": "Unknown link",
        "unknown": "We cannot find an invitation for this link. Check that the whole link was copied, or contact the secretariat.",
        "novideo_title": "No video link yet",
        "contact": "Questions? Contact {organizer}, {email}.",
        "language": "På svenska",
        "other_lang": "sv",
        "timezone": "Times in {zone}",
    },
}


def choose(accept_language: str, override: str | None = None) -> str:
    """`sv` unless the reader asks for English first (or `?lang=` says so)."""
    if override in TEXTS:
        return override
    best, best_q = "sv", -1.0
    for part in accept_language.split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = tag.strip().lower()[:2]
        if lang in TEXTS and q > best_q:
            best, best_q = lang, q
    return best
