"""vdirsyncer as "someone else's calendar client": it mirrors a calendar into a folder of .ics files.

Editing or removing a file there and calling sync() makes vdirsyncer PUT (with If-Match) or
DELETE it on the server, the way a desktop client does.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.caldav_servers import CaldavServer


class Vdirsyncer:
    """One vdirsyncer pair: the calendar at `calendar_url` and a local folder."""

    def __init__(self, server: CaldavServer, calendar_url: str, folder: Path) -> None:
        self.folder = folder
        self.local = folder / "local"
        self.local.mkdir(parents=True, exist_ok=True)
        remote = [
            '[storage remote]',
            'type = "caldav"',
            f'url = {json.dumps(calendar_url)}',
        ]
        if server.username is not None:
            remote += [f'username = {json.dumps(server.username)}', f'password = {json.dumps(server.password)}']
        self.config = folder / "config"
        self.config.write_text("\n".join([
            "[general]",
            f"status_path = {json.dumps(str(folder / 'status') + '/')}",
            "[pair calendar]",
            'a = "local"',
            'b = "remote"',
            "collections = null",
            '[storage local]',
            'type = "filesystem"',
            f"path = {json.dumps(str(self.local) + '/')}",
            'fileext = ".ics"',
            *remote,
        ]) + "\n", encoding="utf-8")
        self._run("discover")

    def _run(self, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "vdirsyncer", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"vdirsyncer {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def sync(self) -> None:
        """Both ways, as a client's sync button does."""
        self._run("sync")

    def file_with(self, uid: str) -> Path:
        """The local file holding the event with `uid`."""
        for path in self.local.glob("*.ics"):
            if f"UID:{uid}" in path.read_text(encoding="utf-8"):
                return path
        raise AssertionError(f"vdirsyncer has no event {uid}; it has {sorted(p.name for p in self.local.glob('*.ics'))}")
