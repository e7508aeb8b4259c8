"""Typed keys of the app's state."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from service.container import Services

SERVICES: web.AppKey["Services"] = web.AppKey("services")
OPENAPI: web.AppKey[dict] = web.AppKey("openapi", dict)
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
