"""Domain exceptions; the error middleware maps each to a problem response."""
from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    title = "Bad request"
    type = "about:blank"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class Invalid(DomainError):
    """A field's value breaks a rule; `field` names it."""

    status = 422
    title = "Invalid input"
    type = "/problems/validation"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message, "type": "value_error"}])
        self.field = field


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type = "/problems/not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    type = "/problems/conflict"


class RoomConflict(Conflict):
    """A room is already booked for part of the time."""

    title = "Room already booked"
    type = "/problems/room-conflict"


class Unavailable(DomainError):
    status = 503
    title = "Service unavailable"
    type = "/problems/unavailable"
