"""What can be wrong with a personal link."""
from __future__ import annotations

from service.errors import DomainError


class LinkUnknown(DomainError):
    status = 404
    title = "Unknown link"


class LinkGone(DomainError):
    status = 410
    title = "Link no longer valid"


class NoVideo(DomainError):
    status = 409
    title = "No video link"
