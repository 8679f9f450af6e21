"""The built-in Redis' ACL users, as the chart renders them, on a real redis-server.

The StatefulSet's start script is run as rendered (only the paths, the port and the bind
address changed), with password files like the Secret's. A whole set of jobs then runs as
the chart's users: the API (in-process, with its lifespan loops) as ``api``, real Celery
workers as ``worker`` (one of them SIGKILLed mid-job, so that kombu's restore and the
reaper run too). Redis logs every command it refuses a user (ACL LOG): it must stay empty.
KEDA's user may count the queues as KEDA's scaler does (EVAL of its TYPE/LLEN/HLEN script)
and nothing else; no user of bgworker may FLUSHALL, CONFIG or KEYS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from tests import factories
from tests.chart.render import render
from tests.conftest import TEST_ENV
from tests.helpers import wait_for, wait_state
from worker.jobs import JobStore
from worker.redis_client import sync_client
from worker.redis_server import free_port
from worker.settings import Settings

REDIS = "bgw-bgworker-redis"
PASSWORDS = {
    "default": "s3cret with spaces & $igns",
    "api": "api password: not the default's",
    "worker": "worker-" + "w" * 30,
    "keda": "keda \\ 'quoted' \"too\"",
}
# KEDA's redis scaler sends this script on every poll (pkg/scalers/redis_scaler.go).
KEDA_SCRIPT = """
local listName = KEYS[1]
local listType = redis.call('type', listName).ok
if listType == 'zset' then
    return redis.call('zcard', listName)
elseif listType == 'set' then
    return redis.call('scard', listName)
elseif listType == 'hash' then
    return redis.call('hlen', listName)
elseif listType == 'list' or listType == 'none' then
    return redis.call('llen', listName)
else
    return redis.error_reply('ERR unsupported key type: ' .. listType)
end
"""


@dataclass
class AclRedis:
    port: int
    users: dict[str, str]  # component -> the ACL user its pod is given

    def client(self, user: str, **options: Any) -> redis.Redis:
        return redis.Redis(port=self.port, username=user, password=PASSWORDS[user], **options)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    rendered = render()
    sts = rendered.get("StatefulSet", REDIS)["spec"]["template"]["spec"]
    script = sts["containers"][0]["args"][0]
    secret_volume = next(v for v in sts["volumes"] if v["name"] == "users")["secret"]
    secret = rendered.get("Secret", secret_volume["secretName"])
    users_dir = tmp_path / "users"
    users_dir.mkdir()
    for item in secret_volume["items"]:
        assert item["key"] in secret["data"], f"the Secret has no key {item['key']}"
        # As the kubelet writes a Secret file: exactly the value, no newline.
        (users_dir / item["path"]).write_text(PASSWORDS[item["path"]])
    port = free_port()
    for old, new in {
        "/etc/bgworker/redis-users": str(users_dir),
        "/tmp/users.acl": str(tmp_path / "users.acl"),
        "--dir /data": f"--dir {tmp_path}",
        "--port 6379": f"--port {port} --bind 127.0.0.1",
    }.items():
        assert old in script, old
        script = script.replace(old, new)
    proc = subprocess.Popen(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"})
    users = {}
    for name in ("api", "worker"):
        c = rendered.get("Deployment", f"bgw-bgworker-{name}")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in c["containers"][0]["env"]}
        users[name] = env["BGWORKER_REDIS_USERNAME"]
    for trigger in rendered.get("ScaledObject", "bgw-bgworker-worker")["spec"]["triggers"]:
        users["keda"] = trigger["metadata"]["username"]
    server = AclRedis(port, users)
    admin = server.client("default")
    try:
        wait_for(lambda: _ping(admin), timeout=10, what="the chart's redis-server")
        yield server
    finally:
        admin.close()
        proc.terminate()
        proc.wait(10)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _env(server: AclRedis, tmp_path: Path, component: str) -> dict[str, str]:
    password_file = tmp_path / f"{component}.password"
    password_file.write_text(PASSWORDS[server.users[component]])
    return {
        **TEST_ENV,
        "BGWORKER_REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
        "BGWORKER_REDIS_USERNAME": server.users[component],
        "BGWORKER_REDIS_PASSWORD_FILE": str(password_file),
        "BGWORKER_STATE_DIR": str(tmp_path / "state"),
    }


@pytest.fixture
def env(acl_redis: AclRedis, tmp_path: Path) -> dict[str, str]:
    """The workers' environment (tests/conftest.py's start_worker uses it)."""
    return _env(acl_redis, tmp_path, "worker")


def _api_settings(server: AclRedis, tmp_path: Path) -> Settings:
    settings = Settings.from_env(_env(server, tmp_path, "api"))
    if "auth" in {f.name for f in settings.__dataclass_fields__.values()}:
        settings = settings.replace(auth="off")  # API keys are tested elsewhere
    return settings


def test_a_whole_workload_runs_as_the_chart_users_and_redis_refuses_them_nothing(
    acl_redis, tmp_path, start_worker
):
    assert acl_redis.users == {"api": "api", "worker": "worker", "keda": "keda"}
    admin = acl_redis.client("default")
    settings = _api_settings(acl_redis, tmp_path)
    store = JobStore(sync_client(settings), settings.job_retention_seconds)
    start_worker("--queues", "critical,default,low")
    try:
        _workload(settings, store, start_worker)
    finally:
        refused = admin.acl_log()
        assert refused == [], "Redis refused the chart's users: " + "; ".join(
            f"{e['username']} {e['reason']} {e['object']} ({e['context']})" for e in refused
        )


def _workload(settings, store, start_worker):
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        image = api.post("/v1/images", content=factories.photo_jpeg(400, 300))
        assert image.status_code == 202, image.text
        image_id = image.json()["id"]
        noop = api.post("/v1/jobs", json={"task": "debug.noop"}, headers={"Idempotency-Key": "a"})
        flaky = api.post("/v1/jobs", json={"task": "debug.flaky", "args": {"fail_times": 9}})
        sleep = api.post("/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 3}})
        later = api.post("/v1/jobs", json={"task": "debug.noop", "delay_seconds": 1})
        for resp in (noop, flaky, sleep, later):
            assert resp.status_code == 202, resp.text
        wait_state(store, sleep.json()["id"], "running")
        assert api.delete(f"/v1/jobs/{sleep.json()['id']}").status_code == 200
        with api.stream("GET", f"/v1/jobs/{image_id}/events") as events:
            assert events.status_code == 200
            for line in events.iter_lines():
                if '"state":"succeeded"' in line.replace(" ", ""):
                    break
        assert api.get(f"/v1/images/{image_id}/320").status_code == 200
        # A stream that waits for news: the API's event hub (XREAD, CLIENT ID/UNBLOCK).
        slow = api.post("/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 2}})
        with api.stream("GET", f"/v1/jobs/{slow.json()['id']}/events") as events:
            for line in events.iter_lines():
                if '"state":"succeeded"' in line.replace(" ", ""):
                    break
        for job in (noop, later):
            wait_state(store, job.json()["id"], "succeeded")
        wait_state(store, flaky.json()["id"], "dead")
        assert api.post(f"/v1/dead/{flaky.json()['id']}/retry").status_code == 202
        for path in ("/v1/dead", "/v1/queues", "/metrics", "/readyz", f"/v1/jobs/{image_id}"):
            assert api.get(path).status_code == 200, path
        # A worker killed mid-job: its message waits in unacked until a live worker's
        # kombu restores it (or the API's reaper finds it), all as these users.
        victim = start_worker("--queues", "low")
        held = api.post("/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 4}})
        held_id = held.json()["id"]
        wait_state(store, held_id, "running")
        os.killpg(victim.pid, signal.SIGKILL)
        start_worker("--queues", "low")
        wait_state(store, held_id, "succeeded", timeout=40)
        time.sleep(2)  # a few more rounds of the API's loops (promote, reaper, janitor)


def test_keda_counts_the_queues_and_can_do_nothing_else(acl_redis):
    admin = acl_redis.client("default")
    admin.lpush("default", "job-1", "job-2")
    admin.hset("unacked", "tag", "message")
    admin.set("bgworker:secret", "x")
    # As KEDA's go-redis client: HELLO 3 with AUTH, PING, then the scaler's script.
    keda = acl_redis.client(acl_redis.users["keda"], protocol=3)
    assert keda.ping()
    counts = {name: keda.eval(KEDA_SCRIPT, 1, name) for name in ("default", "unacked", "low")}
    assert counts == {"default": 2, "unacked": 1, "low": 0}
    assert keda.llen("default") == 2 and keda.hlen("unacked") == 1
    for forbidden in (
        lambda: keda.flushall(),
        lambda: keda.get("bgworker:secret"),
        lambda: keda.config_get("*"),
        lambda: keda.lpop("default"),
        lambda: keda.delete("default"),
        lambda: keda.llen("bgworker:secret"),
        lambda: keda.eval("return redis.call('del', KEYS[1])", 1, "default"),
        lambda: keda.eval("return redis.call('llen', KEYS[1])", 1, "bgworker:secret"),
    ):
        with pytest.raises(redis.exceptions.ResponseError, match="NOPERM|can't|no permissions"):
            forbidden()
    assert admin.llen("default") == 2


@pytest.mark.parametrize("component", ["api", "worker"])
def test_bgworker_users_cannot_administer_redis(acl_redis, component):
    client = acl_redis.client(acl_redis.users[component])
    assert client.ping()
    for forbidden in (
        lambda: client.flushall(),
        lambda: client.flushdb(),
        lambda: client.config_get("*"),
        lambda: client.config_set("maxmemory-policy", "allkeys-lru"),
        lambda: client.keys("*"),
        lambda: client.execute_command("ACL", "LIST"),
        lambda: client.execute_command("CLIENT", "KILL", "TYPE", "normal"),
        lambda: client.execute_command("SCRIPT", "FLUSH"),
        lambda: client.set("not-bgworker", "x"),
        lambda: client.eval("return redis.call('flushall')", 0),
    ):
        with pytest.raises(redis.exceptions.ResponseError, match="NOPERM|can't|no permissions"):
            forbidden()


def test_the_default_user_needs_its_password_and_nobody_gets_in_without_one(acl_redis):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis.port).set("x", "1")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis.port, username="api", password="guess").ping()
    assert acl_redis.client("default").config_get("maxmemory-policy") == {
        "maxmemory-policy": "noeviction"
    }
