"""The built-in Redis' command line, as the chart renders it, run by a real redis-server."""

from __future__ import annotations

import subprocess

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from tests.chart.render import render
from tests.helpers import wait_for
from worker.redis_server import free_port
from worker.settings import Settings

PASSWORD = "s3cret with spaces & $igns"


@pytest.fixture(params=[True, False], ids=["acl", "no-acl"])
def chart_redis(tmp_path, request):
    values = {"redis": {"maxmemory": "64mb", "acl": {"enabled": request.param}}}
    sts = render(values).get("StatefulSet", "bgw-bgworker-redis")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"]
    script = container["args"][0]
    port = free_port()
    # Only what differs between a pod and this machine: the data dir, the port, loopback,
    # and where the users' password files are (tests/chart/test_redis_acl.py tests them).
    script = script.replace("--dir /data", f"--dir {tmp_path}")
    script = script.replace("--port 6379", f"--port {port} --bind 127.0.0.1")
    users = tmp_path / "users"
    users.mkdir()
    for user in ("default", "api", "worker", "keda"):
        (users / user).write_text(PASSWORD if user == "default" else f"{user}-password")
    script = script.replace("/etc/bgworker/redis-users", str(users))
    script = script.replace("/tmp/users.acl", str(tmp_path / "users.acl"))
    proc = subprocess.Popen(
        ["sh", "-c", script], env={"REDIS_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"}
    )
    client = redis.Redis(port=port, password=PASSWORD)
    try:
        wait_for(lambda: _ping(client), timeout=10, what="the chart's redis-server")
        yield port, client
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_redis_requires_the_password_from_the_secret(chart_redis):
    port, _ = chart_redis
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port).set("x", "1")


def test_redis_persists_every_write_and_never_evicts_jobs(chart_redis):
    _, client = chart_redis
    config = client.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == 64 * 1024 * 1024
    # Full: a new job is refused with an error (the API turns it into 503), and the jobs
    # already queued stay: nothing is evicted.
    client.rpush("default", "job-0")
    fill(client)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.rpush("default", "job-1")
    assert client.lrange("default", 0, -1) == [b"job-0"]


def fill(client: redis.Redis) -> None:
    """Put Redis over its maxmemory, as a backlog that outgrew it would."""
    for i in range(8):
        client.set(f"filler:{i}", "x" * (1024 * 1024))
    client.config_set("maxmemory", client.info("memory")["used_memory"] // 2)


def test_api_answers_503_when_redis_is_full(chart_redis, tmp_path):
    port, client = chart_redis
    fill(client)
    settings = Settings.from_env(
        {
            "BGWORKER_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "BGWORKER_REDIS_PASSWORD": PASSWORD,
            "BGWORKER_STATE_DIR": str(tmp_path / "state"),
            "BGWORKER_DEBUG_TASKS": "1",
            "BGWORKER_AUTH": "off",
        }
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        answer = api.post("/v1/jobs", json={"task": "debug.noop"})
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    # Refused before Redis itself refuses: the headroom is kept for workers' outcomes.
    assert error["code"] == "queue_full"
    assert "nearly full" in error["message"]
    assert answer.headers["Retry-After"]
