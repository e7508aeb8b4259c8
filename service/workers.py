"""`forumbridge serve --workers N`: N server processes on one port.

One Python process uses one core. On PostgreSQL the service already runs as several replicas on
one database (outbox jobs claimed with SKIP LOCKED, one calendar synced at a time by an advisory
lock, group commit per process), so the processes here are replicas that share a port: each worker
listens on it with SO_REUSEPORT, and the kernel spreads new connections over them evenly (one
accepting socket shared by all would wake mostly the same process).

The parent does what must happen once before any worker starts (the kept secrets are created,
the metrics folder made) and then only supervises: SIGTERM or SIGINT is passed on to every worker,
which drains its requests as a single server does; a worker that dies is started again, unless it
exits with an error right after its start (it cannot start, and would not the next time either:
then the others are stopped and the exit status is 1).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Callable

log = logging.getLogger("forumbridge.workers")

# A worker that ends sooner than this after its start is taken to fail at start-up.
MIN_LIFETIME_S = 5.0


def prepare_metrics_folder() -> str:
    """A fresh folder where each worker's metrics live (PROMETHEUS_MULTIPROC_DIR).

    It must be set before prometheus_client is imported, so the caller does this first thing.
    """
    folder = tempfile.mkdtemp(prefix="forumbridge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def supervise(count: int, run_worker: Callable[[], None], metrics_folder: str) -> int:
    """Fork `count` workers that each call `run_worker()`; returns the exit status."""
    workers: dict[int, float] = {}
    stopping = False
    status = 0

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                run_worker()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported, then the worker ends
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        workers[pid] = time.monotonic()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for _ in range(count):
            spawn()
        print(f"forumbridge: {count} workers on one port, pids {' '.join(map(str, workers))}", flush=True)
        while workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            started = workers.pop(pid, None)
            if started is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if stopping:
                status = status or (code if code > 0 else 0)
                continue
            lived = time.monotonic() - started
            log.error("worker %d ended with status %d after %.1f s", pid, code, lived)
            if code > 0 and lived < MIN_LIFETIME_S:  # it could not start (killed by a signal is another matter)
                status = 1
                stop(signal.SIGTERM, None)
                continue
            spawn()
    finally:
        shutil.rmtree(metrics_folder, ignore_errors=True)
    return status
