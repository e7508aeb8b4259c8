"""Shared wire formats: problem details, pages, base model settings."""
from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")


def _nul_at(data: Any) -> str | None:
    """The dotted path of the first string (value or key) holding a NUL character, if any."""
    # A loop, not recursion: a body may be nested as deeply as the JSON parser allows.
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return ".".join(path) or "body"
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if isinstance(key, str) and "\x00" in key:
                    return ".".join(path) or "body"
                stack.append(((*path, str(key)), item))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), item) for i, item in reversed(list(enumerate(value))))
    return None


class Wire(BaseModel):
    """Base of every request body: unknown fields are refused, strings kept as sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL cannot store NUL in text, and no name or title needs one.
        where = _nul_at(data)
        if where is not None:
            raise ValueError(f"{where}: must not contain a NUL character")
        return data


class Out(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(from_attributes=True)


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the bad field, e.g. `sessions.0.starts_at`")
    message: str
    type: str = Field(default="value_error", description="Machine-readable error kind")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    conflicts: list[dict[str, Any]] | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last page"
    )
