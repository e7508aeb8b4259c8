"""Radicale, run as `python -m radicale` would run it, noting where each request spends its time.

    python bench/radicale_traced.py TRACE_FILE --config CONFIG

Radicale is left as it is; two of its functions are wrapped to append one line to TRACE_FILE each
time they end (times from `time.perf_counter`, the same clock in every process on Linux; CPU from
`time.thread_time`, the handling thread's own):

    R <method> <entered> <left> <thread CPU s>          one request, as the WSGI application saw it
    L <mode> <asked> <got> <released> <thread CPU s>    one hold of the storage lock ("r" or "w");
                                                        the CPU is the holder's while it held it

`trace_summary` reads such a file back for a window of time. The caldav_clients benchmark uses
both to show how much of a burst of creates Radicale spends holding its write lock, how much of
that hold is not on the CPU (waiting for the disk, or for the interpreter lock that other requests
take meanwhile), and how long the lock stands free between two holds.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


def _wrap(trace: Path) -> None:
    import radicale.app as application
    from radicale.storage.multifilesystem import lock as storage_lock

    out = trace.open("a", buffering=1, encoding="ascii")
    call, acquire = application.Application.__call__, storage_lock.StoragePartLock.acquire_lock

    def traced_call(self: Any, environ: dict, start_response: Any) -> Any:
        entered, cpu = time.perf_counter(), time.thread_time()
        try:
            return call(self, environ, start_response)
        finally:
            out.write(f"R {environ.get('REQUEST_METHOD', '-')} {entered:.6f} {time.perf_counter():.6f} "
                      f"{time.thread_time() - cpu:.6f}\n")

    @contextlib.contextmanager
    def traced_lock(self: Any, mode: str, *args: Any, **kwargs: Any) -> Iterator[None]:
        asked = time.perf_counter()
        with acquire(self, mode, *args, **kwargs):
            got, cpu = time.perf_counter(), time.thread_time()
            try:
                yield
            finally:
                out.write(f"L {mode} {asked:.6f} {got:.6f} {time.perf_counter():.6f} "
                          f"{time.thread_time() - cpu:.6f}\n")

    application.Application.__call__ = traced_call  # type: ignore[method-assign]
    storage_lock.StoragePartLock.acquire_lock = traced_lock  # type: ignore[method-assign]


@dataclass(frozen=True)
class TraceSummary:
    """What Radicale did between two moments (seconds; requests that entered in the window)."""

    span: float
    requests: int
    request_cpu: float  # CPU of the threads handling them
    write_held: float  # the write lock held
    write_held_cpu: float  # of which its holder was on the CPU
    write_free: float  # the write lock not held
    waiting_when_freed: int  # write holds that ended with another request already asking for it
    holds: int

    @property
    def write_held_off_cpu(self) -> float:
        return self.write_held - self.write_held_cpu


def trace_summary(trace: Path, start: float, end: float) -> TraceSummary:
    requests, holds = [], []
    for line in trace.read_text(encoding="ascii").splitlines():
        kind, mode, *times = line.split()
        values = [float(t) for t in times]
        if kind == "R" and start <= values[0] <= end:
            requests.append(values)
        elif kind == "L" and mode == "w" and start <= values[1] <= end:
            holds.append(values)
    holds.sort(key=lambda h: h[1])
    held = sum(released - got for _, got, released, _ in holds)
    waiting = sum(1 for before, after in zip(holds, holds[1:]) if after[0] < before[2])
    return TraceSummary(
        span=end - start, requests=len(requests), request_cpu=sum(r[2] for r in requests), write_held=held,
        write_held_cpu=sum(h[3] for h in holds), write_free=(end - start) - held, waiting_when_freed=waiting,
        holds=len(holds))


if __name__ == "__main__":
    _wrap(Path(sys.argv.pop(1)))
    from radicale.__main__ import run

    sys.argv[0] = "radicale"
    run()
