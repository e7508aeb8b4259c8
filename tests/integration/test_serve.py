"""The service as operators run it: `forumbridge serve --migrate`, ready, then stopped with SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

FORUMBRIDGE = str(Path(sys.executable).with_name("forumbridge"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_serve_migrates_becomes_ready_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "FORUMBRIDGE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/fb.db",
           "FORUMBRIDGE_DATA_DIR": str(tmp_path / "data"), "FORUMBRIDGE_HTTP__PORT": str(port),
           "FORUMBRIDGE_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([FORUMBRIDGE, "serve", "--migrate"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while _get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "not ready in 60 s"
            time.sleep(0.2)
        assert _get(f"http://127.0.0.1:{port}/healthz") == 200
        assert _get(f"http://127.0.0.1:{port}/api/v1/meetings") == 401
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "GET /readyz 200" in out and "rid=" in out
    assert (tmp_path / "data" / "jwt_secret").stat().st_mode & 0o777 == 0o600
