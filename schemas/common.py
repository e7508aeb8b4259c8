"""Shared wire formats: problem details, pages, base model settings."""
from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Wire(BaseModel):
    """Base of every request body: unknown fields are refused, strings kept as sent."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


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
