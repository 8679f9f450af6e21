"""BGWORKER_ENQUEUE_FSYNC: a 202 only once Redis has fsynced the new job (WAITAOF).

WAITAOF came with Redis 7.2; Debian 12's Redis is 7.0, so the positive case runs on
Valkey 8 (a Redis 7.2 fork, in Debian's bookworm-backports), installed here when missing.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from cluster.host import apt_get_install
from tests.e2e.docker_images import apt_mirror, host_release, read_apt_sources
from worker.errors import SettingsError
from worker.redis_server import RedisServer
from worker.settings import Settings

pytestmark = pytest.mark.slow


def _valkey() -> str:
    """valkey-server from the host release's backports (root), or a skip naming it."""
    if shutil.which("valkey-server") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(
                "valkey-server is missing: apt-get install -t bookworm-backports valkey-server"
            )
        # The host's own release and mirror, read from /etc, never written down here.
        codename = host_release(Path("/etc/os-release").read_text())
        mirror = apt_mirror(codename, read_apt_sources())
        sources = Path(f"/etc/apt/sources.list.d/{codename}-backports.list")
        if not sources.exists():
            sources.write_text(f"deb {mirror} {codename}-backports main\n")
        # No service may start from the package's scripts: tests run their own servers.
        policy = Path("/usr/sbin/policy-rc.d")
        had_policy = policy.exists()
        if not had_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            apt_get_install(["-t", f"{codename}-backports", "valkey-server"])
        finally:
            if not had_policy:
                policy.unlink()
    return "valkey-server"


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[RedisServer]:
    # everysec: WAITAOF then waits for the next fsync (at most a second), a group commit.
    server = RedisServer(tmp_path / "valkey", binary=_valkey(), appendfsync="everysec")
    server.start()
    yield server
    server.kill()


def app_settings(env: dict[str, str], url: str) -> Settings:
    return Settings.from_env({**env, "BGWORKER_REDIS_URL": url, "BGWORKER_ENQUEUE_FSYNC": "1"})


def test_new_job_is_answered_after_waitaof_on_its_own_connection(env, valkey):
    seen: list[dict[str, object]] = []
    watcher = redis.Redis.from_url(valkey.url, socket_timeout=30)
    ready = threading.Event()

    def watch() -> None:
        with watcher.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                seen.append(command)
                names = [str(c["command"]).split()[0] for c in seen]
                if "EVALSHA" in names and names[-1] == "WAITAOF":
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(10)
    with TestClient(create_app(app_settings(env, valkey.url))) as api:
        resp = api.post("/v1/jobs", json={"task": "debug.noop"})
    assert resp.status_code == 202, resp.text
    thread.join(30)
    commands = [(str(c["command"]).split()[0], c["client_port"]) for c in seen]
    evalsha = [port for name, port in commands if name == "EVALSHA"]
    waits = [i for i, (name, _) in enumerate(commands) if name == "WAITAOF"]
    assert waits, commands
    last_wait = commands[waits[-1]]
    # The wait follows the create script, on the same connection (WAITAOF waits for the
    # writes of its own connection only).
    assert evalsha and last_wait[1] == evalsha[-1], commands


def test_api_refuses_to_start_on_a_redis_without_waitaof(env, redis_server):
    with pytest.raises(SettingsError, match="needs a Redis that has WAITAOF"):
        with TestClient(create_app(app_settings(env, redis_server.url))):
            pass


def test_api_refuses_to_start_without_an_append_only_file(env, valkey):
    redis.Redis.from_url(valkey.url).config_set("appendonly", "no")
    with pytest.raises(SettingsError, match="appendonly"):
        with TestClient(create_app(app_settings(env, valkey.url))):
            pass
