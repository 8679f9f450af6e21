"""The ``bgworker`` command as a user runs it: real processes, real HTTP through uvicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx2 as httpx
import pytest

from tests.helpers import REPO, wait_for
from worker.enqueue import submit
from worker.redis_server import free_port

pytestmark = pytest.mark.slow


def run_cli(env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_dev(env: dict[str, str], port: int, *args: str) -> subprocess.Popen[str]:
    """``bgworker dev`` as a user starts it, its output collected."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "dev", "--port", str(port), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_dev_runs_everything_and_ctrl_c_stops_it_all(tmp_path):
    port = free_port()
    env = {**os.environ, "BGWORKER_STATE_DIR": str(tmp_path / "state"), "BGWORKER_DEBUG_TASKS": "1"}
    env = {k: v for k, v in env.items() if k != "BGWORKER_REDIS_URL"}
    proc = start_dev(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/readyz"), timeout=30, what="bgworker dev to be ready")
        job = httpx.post(f"{base}/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 0.2}})
        assert job.status_code == 202
        url = f"{base}/v1/jobs/{job.json()['id']}"
        wait_for(lambda: httpx.get(url).json()["state"] == "succeeded", what="job to succeed")
        redis_pid = _child_pid(proc.pid, "redis-server")
        assert redis_pid, "dev started its own redis-server"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}" in out
    assert "started redis-server" in out
    # Nothing keeps running: not the API, not Redis.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=1)
    wait_for(lambda: not _alive(redis_pid), timeout=10, what="redis-server to exit")
    assert (tmp_path / "state" / "redis" / "appendonlydir").exists(), "Redis data is kept"


def test_second_dev_on_the_same_state_dir_refuses_and_names_the_way_out(tmp_path):
    env = {**os.environ, "BGWORKER_STATE_DIR": str(tmp_path / "state")}
    env = {k: v for k, v in env.items() if k != "BGWORKER_REDIS_URL"}
    port = free_port()
    first = start_dev(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{base}/readyz"), timeout=30, what="the first bgworker dev")
        second = run_cli(env, "dev", "--port", str(free_port()))
        assert second.returncode == 2, second.stdout + second.stderr
        assert "in use by another `bgworker dev` (pid" in second.stderr
        assert "--state-dir" in second.stderr
        assert "started redis-server" not in second.stdout, "no second Redis on the same data"
        assert answers(f"{base}/readyz"), "the first instance is untouched"
        # Its own directory: it starts (and stops) alongside the first.
        other_port = free_port()
        other = start_dev(env, other_port, "--state-dir", str(tmp_path / "other"))
        try:
            wait_for(
                lambda: answers(f"http://127.0.0.1:{other_port}/readyz"),
                timeout=30,
                what="the bgworker dev with its own --state-dir",
            )
        finally:
            other.send_signal(signal.SIGINT)
            other.communicate(timeout=60)
        assert (tmp_path / "other" / "redis" / "appendonlydir").exists()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


def answers(url: str) -> bool:
    """Whether a server answers ``url`` with 200 (not yet listening is no error)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False


def _child_pid(parent: int, name: str) -> int:
    out = subprocess.run(
        ["ps", "-o", "pid=,comm=", "--ppid", str(parent)], capture_output=True, text=True
    ).stdout
    pids = [int(line.split()[0]) for line in out.splitlines() if name in line]
    return pids[0] if pids else 0


def test_queues_command_prints_depths(env, store, celery_app):
    for _ in range(2):
        submit(store, celery_app, "debug.noop", {}, "low")
    out = run_cli(env, "queues")
    assert out.returncode == 0, out.stderr
    low = next(line for line in out.stdout.splitlines() if line.startswith("low"))
    assert low.split()[1] == "2"
    assert '"waiting": 2' in run_cli(env, "queues", "--json").stdout


def test_bad_setting_stops_the_command_with_its_name(env):
    out = run_cli({**env, "BGWORKER_MAX_PIXELS": "many"}, "queues")
    assert out.returncode == 2
    assert "BGWORKER_MAX_PIXELS" in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_redis_is_reported_not_a_traceback(env):
    out = run_cli({**env, "BGWORKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, "queues")
    assert out.returncode == 1
    assert "cannot reach Redis" in out.stderr


def test_api_command_stops_gracefully_on_sigterm(env):
    proc = _serve_api(env, free_port(), capture=True)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    # uvicorn's own handling, not a wrapper: a clean shutdown with its lifespan run
    # (uvicorn then re-raises the signal it caught, so the status may say SIGTERM).
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert "Traceback" not in out


def _serve_api(env, port: int, capture: bool = False) -> subprocess.Popen[str]:
    """`bgworker api` on ``port``, once it answers /readyz (output kept if ``capture``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(port)],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/readyz"), timeout=30, what="the API")
    except BaseException:
        proc.kill()
        raise
    return proc


def test_smoke_passes_against_a_working_installation(env, start_worker):
    port = free_port()
    api = _serve_api(env, port)
    try:
        start_worker()
        out = run_cli(env, "smoke", f"http://127.0.0.1:{port}", "--timeout", "30")
    finally:
        api.terminate()
        api.wait(30)
    assert out.returncode == 0, out.stderr
    assert "bgworker smoke: OK" in out.stdout
    assert "bytes of WebP" in out.stdout


def test_smoke_says_what_is_broken(env):
    port = free_port()
    out = run_cli(env, "smoke", f"http://127.0.0.1:{port}")
    assert out.returncode == 1
    assert "cannot reach the API" in out.stderr

    api = _serve_api(env, port)  # an API, but no worker: the job never runs
    try:
        out = run_cli(env, "smoke", f"http://127.0.0.1:{port}", "--timeout", "2")
    finally:
        api.terminate()
        api.wait(30)
    assert out.returncode == 1
    assert "still queued after 2 s" in out.stderr
    assert "are workers running" in out.stderr
