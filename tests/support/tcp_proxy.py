"""A small TCP proxy on loopback that a test can cut and restore: the database "network" under its control.

It runs its own event loop in a thread, so it keeps forwarding (or keeps refusing) whatever the
test's own loop is doing. Three states:

- `restore()`: forward every byte both ways (the state after `start()`);
- `cut()`: close every open connection and refuse new ones (the port stops listening: a
  database server that went away, or a firewall that answers with resets);
- `stall()`: keep every connection open and accept new ones, but forward nothing (a network that
  silently drops packets: without timeouts a client waits for ever).

`connections` counts the connections accepted so far, `open_pairs` those open now.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

State = Literal["open", "cut", "stalled"]
_CHUNK = 64 * 1024


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _abort(writer)
        for task in self.tasks:
            task.cancel()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once with a reset (SO_LINGER 0), as a dead peer or a firewall would."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    writer.transport.abort()


class TcpProxy:
    """Listens on 127.0.0.1:`port` (chosen at start) and forwards to `target_host`:`target_port`."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.state: State = "open"
        self.connections = 0
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    # -- the test's side (any thread) ---------------------------------------------------------
    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Close every connection now and refuse new ones until restore()."""
        self._call(self._cut())

    def stall(self) -> None:
        """Forward nothing (in either direction, on old and new connections) until restore()."""
        self._call(self._set("stalled"))

    def restore(self) -> None:
        """Listen and forward again (connections made while stalled start forwarding too)."""
        self._call(self._restore())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def open_pairs(self) -> int:
        return len(self._pairs)

    @contextmanager
    def cut_off(self) -> Iterator[None]:
        self.cut()
        try:
            yield
        finally:
            self.restore()

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    # -- the proxy's loop ---------------------------------------------------------------------
    async def _set(self, state: State) -> None:
        self.state = state

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        self.state = "cut"
        if self._server is not None:
            self._server.close()
            self._server = None
        for pair in list(self._pairs):
            pair.abort()
        self._pairs.clear()

    async def _restore(self) -> None:
        self.state = "open"
        if self._server is None:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.state == "cut":
            _abort(writer)
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._pairs.discard(pair)
            _abort(writer)
            return
        pair.upstream = up_writer
        pair.tasks = [asyncio.create_task(self._pump(reader, up_writer, pair)),
                      asyncio.create_task(self._pump(up_reader, writer, pair))]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                while self.state == "stalled":
                    await asyncio.sleep(0.05)  # hold the bytes: the network "lost" them for now
                if self.state == "cut":
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if pair in self._pairs:
                self._pairs.discard(pair)
                pair.abort()
