"""The composition root: create_app builds everything the service runs on."""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import AsyncIterator

from aiohttp import web

from service.container import build_services, stop_step
from service.db.engine import create_database
from service.http import feeds, ops, pages, webhooks
from service.http.middleware import observe
from service.http.openapi import build
from service.http.routes import v1
from service.keys import OPENAPI, SERVICES
from service.settings import Settings, jwt_secret




def package_version() -> str:
    try:
        return version("forumbridge")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application; its database opens on start-up and closes on clean-up."""
    app = web.Application(middlewares=[observe], client_max_size=settings.http.max_body_bytes)
    db = create_database(settings.database.url, pool_size=settings.database.pool_size, echo=settings.database.echo,
                         connect_timeout=settings.database.connect_timeout_s,
                         command_timeout=settings.database.command_timeout_s)
    app[SERVICES] = build_services(settings, db, jwt_secret(settings))
    app[OPENAPI] = build(v1, package_version())
    ops.install(app)
    feeds.install(app)
    pages.install(app)
    webhooks.install(app)
    v1.install(app)

    async def database(app: web.Application) -> AsyncIterator[None]:
        yield
        await stop_step("closing the database pools", app[SERVICES].db.dispose())

    async def workers(app: web.Application) -> AsyncIterator[None]:
        # The outbox worker and the calendar sync run beside the requests.
        app[SERVICES].start_workers()
        yield
        await app[SERVICES].stop_workers()

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(workers)
    return app


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiohttp's own access log would repeat our request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
