"""The forumbridge command: serve, migrate, token, seed-demo."""
from __future__ import annotations

import argparse
import asyncio
import gc
import re
import shlex
import sys
from datetime import timedelta

from aiohttp import web

from service.settings import Settings, SettingsError, jwt_secret, load_settings

DURATION = re.compile(r"^(\d+)([smhd])$")


def _duration(text: str) -> timedelta:
    match = DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError("use a number and s, m, h or d, e.g. 8h")
    n, unit = int(match[1]), match[2]
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forumbridge", description="Rooms, video and calendars for hybrid forum meetings.")
    p.add_argument("--config", help="a TOML file over config/forumbridge.toml (or set FORUMBRIDGE_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTP service", description="Run the HTTP service until SIGTERM or Ctrl-C.")
    s.add_argument("--migrate", action="store_true", help="apply database migrations first")
    s.add_argument("--demo", action="store_true",
                   help="load the demo forum if the database is empty, and print a secretariat token and a curl line")
    s.add_argument("--workers", type=int, metavar="N",
                   help="server processes on the one port (default: http.workers, 1); more than one needs PostgreSQL")
    sub.add_parser("migrate", help="apply database migrations", description="Bring the database schema up to date.")
    t = sub.add_parser("token", help="print a signed API token", description="Print an HS256 token signed with the configured secret.")
    t.add_argument("--sub", required=True, help="who the token is for (recorded in the audit log)")
    t.add_argument("--role", required=True, choices=["secretariat", "viewer"])
    t.add_argument("--ttl", type=_duration, default=timedelta(hours=8), help="lifetime, e.g. 30m, 8h, 7d (default 8h)")
    d = sub.add_parser("seed-demo", help="load the demo forum", description="Load the demo forum of the case.")
    d.add_argument("--if-empty", action="store_true", help="do nothing when the database already holds a forum")
    return p


def _token(settings: Settings, sub: str, role: str, ttl: timedelta) -> str:
    from service.http.auth import issue_token

    if settings.auth.jwt_public_key or settings.auth.jwks_url:
        raise SystemExit("forumbridge token: tokens come from the identity provider when a public key or JWKS is set")
    return issue_token(jwt_secret(settings), sub, role, ttl, settings.auth.issuer, settings.auth.audience)


async def _seed(settings: Settings, if_empty: bool) -> dict[str, str] | None:
    from service.container import build_services
    from service.db.engine import create_database
    from service.demo import is_empty, seed

    db = create_database(settings.database.url)
    try:
        svc = build_services(settings, db, jwt_secret(settings))
        if if_empty and not await is_empty(svc):
            return None
        return await seed(svc)
    finally:
        await db.dispose()


def freeze_startup_objects() -> None:
    """Take what start-up made (modules, the app, its routes and schemas) out of the collector's reach.

    The service holds about 160,000 such objects once it has started. A full collection scanned all of
    them and held up every request in flight for 0.1 to 0.5 s; frozen, they are not scanned again.
    """
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"forumbridge: {exc}", file=sys.stderr)
        return 2
    workers = 1
    metrics_folder = ""
    if args.command == "serve":
        workers = args.workers if args.workers is not None else settings.http.workers
        if workers < 1:
            print("forumbridge: --workers must be at least 1", file=sys.stderr)
            return 2
        if workers > 1 and settings.http.port == 0:
            print("forumbridge: http.workers > 1 needs a fixed http.port", file=sys.stderr)
            return 2
        if workers > 1 and not settings.database.url.startswith("postgresql"):
            print(f"forumbridge: http.workers = {workers} needs PostgreSQL: SQLite takes one writing process",
                  file=sys.stderr)
            return 2
        if workers > 1:
            from service.workers import prepare_metrics_folder

            metrics_folder = prepare_metrics_folder()  # before prometheus_client is imported
    from service.app import configure_logging, create_app
    from service.db.migrate import upgrade

    if args.command == "token":
        print(_token(settings, args.sub, args.role, args.ttl))
        return 0
    if args.command == "migrate" or (args.command == "serve" and args.migrate):
        upgrade(settings.database.url)
        print(f"forumbridge: database migrated ({settings.database.url.split('@')[-1]})", file=sys.stderr)
    if args.command == "seed-demo":
        ids = asyncio.run(_seed(settings, args.if_empty))
        print("demo forum loaded" if ids else "database not empty; demo not loaded", file=sys.stderr)
        if ids:
            print(ids["meeting_id"])
        return 0
    if args.command == "serve":
        configure_logging(settings.log_level)
        try:
            app = create_app(settings)
        except SettingsError as exc:
            print(f"forumbridge: {exc}", file=sys.stderr)
            return 2
        if workers > 1:
            del app  # each worker builds its own, after the fork
        if args.demo:
            asyncio.run(_seed(settings, if_empty=True))
            token = _token(settings, "demo-secretariat", "secretariat", timedelta(hours=12))
            base = f"http://{settings.http.host}:{settings.http.port}"
            print(f"\nSecretariat token (12 h):\n{token}\n\nTry:\n  curl -s -H {shlex.quote('Authorization: Bearer ' + token)} "
                  f"{base}/api/v1/meetings\n", flush=True)
        if workers > 1:
            from service.workers import supervise

            return supervise(workers, lambda: _run(create_app(settings), settings, reuse_port=True), metrics_folder)
        _run(app, settings)
    return 0


def _run(app: web.Application, settings: Settings, *, reuse_port: bool = False) -> None:
    freeze_startup_objects()
    web.run_app(
        app,
        host=settings.http.host,
        port=settings.http.port,
        reuse_port=reuse_port or None,
        shutdown_timeout=settings.http.shutdown_timeout_s,
        access_log=None,
        print=lambda msg: print(msg, flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
