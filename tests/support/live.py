"""The real app served on a loopback port from a thread of its own, for clients that block (requests)."""
from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from service.app import create_app
from service.settings import Settings


class LiveApp:
    """`with LiveApp(settings) as base_url:` serves create_app(settings) on 127.0.0.1 until the block ends.

    The app gets its own event loop in its own thread, so that a synchronous
    client (schemathesis sends with requests) can call it from the test's thread.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-app", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("the app did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self.base_url

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self.settings), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.base_url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
