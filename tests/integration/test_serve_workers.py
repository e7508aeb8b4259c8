"""`forumbridge serve --workers N` (http.workers): N processes on one port and one PostgreSQL database."""
from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from service.http.auth import issue_token
from tests.support.databases import PostgresDatabase
from tests.support.service_process import FORUMBRIDGE, ServiceProcess, write_config


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def _requests_counted(metrics: str, route: str) -> float:
    pattern = re.compile(r'^forumbridge_http_requests_total\{(.*)\} (\S+)$', re.M)
    return sum(float(value) for labels, value in pattern.findall(metrics)
               if f'route="{route}"' in labels and 'status="200"' in labels)


async def _wait(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


@pytest.fixture
def two_workers(postgres: PostgresDatabase, tmp_path: Path) -> tuple[Path, str]:
    """A config for two workers on the test database, and a secretariat token."""
    secret = secrets.token_urlsafe(32)
    config = write_config(tmp_path / "forumbridge.toml", {
        "database": {"url": postgres.fresh(), "pool_size": 4},
        "auth": {"jwt_secret": secret},
        "http": {"host": "127.0.0.1", "workers": 2},
    })
    return config, issue_token(secret, "sekretariatet", "secretariat", timedelta(hours=1), "forumbridge", "forumbridge")


async def test_workers_share_the_port_count_together_survive_a_lost_worker_and_stop_on_sigterm(
        two_workers: tuple[Path, str], tmp_path: Path) -> None:
    config, token = two_workers
    service = ServiceProcess("workers", config, tmp_path)
    service.start()
    try:
        await service.wait_ready()
        assert service.pid is not None
        await _wait(lambda: len(_children(service.pid)) == 2, "two workers")  # type: ignore[arg-type]
        first = _children(service.pid)

        async with aiohttp.ClientSession(service.base_url) as http:
            # Separate connections, so that the kernel spreads them over the workers.
            async def health() -> None:
                async with aiohttp.ClientSession(service.base_url) as own, own.get("/healthz") as resp:
                    assert resp.status == 200
            await asyncio.gather(*(health() for _ in range(60)))

            # Whichever worker answers /metrics counts the requests of both.
            async with http.get("/metrics") as resp:
                assert _requests_counted(await resp.text(), "/healthz") >= 60

            # A worker that dies is replaced; what it counted is kept; the service answers throughout.
            lost = sorted(first)[0]
            subprocess.run(["kill", "-KILL", str(lost)], check=True)
            await _wait(lambda: len(_children(service.pid)) == 2 and lost not in _children(service.pid),  # type: ignore[arg-type]
                        "a new worker in place of the lost one")
            async with aiohttp.ClientSession(service.base_url) as api:
                headers = {"Authorization": f"Bearer {token}"}
                async with api.post("/api/v1/sites", json={"name": "Tillväxten", "city": "Stockholm",
                                                           "timezone": "Europe/Stockholm"}, headers=headers) as resp:
                    assert resp.status == 201, await resp.text()
            await service.wait_ready()
            async with http.get("/metrics") as resp:
                assert _requests_counted(await resp.text(), "/healthz") >= 60

        workers = _children(service.pid)
        process = service._process
        assert process is not None
        service.stop()
        assert process.returncode == 0, service.tail()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    finally:
        service.stop()


def test_more_than_one_worker_on_sqlite_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [FORUMBRIDGE, "serve", "--workers", "2"], capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "FORUMBRIDGE_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/forumbridge.db",
             "FORUMBRIDGE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert "needs PostgreSQL" in result.stderr and "workers" in result.stderr
    assert not (tmp_path / "forumbridge.db").exists()  # refused before anything was touched
