"""The worker's liveness probe: busy passes, stuck fails, draining passes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, wait_for, wait_state
from worker.enqueue import submit


def alive(env, heartbeat, max_age: float) -> subprocess.CompletedProcess[str]:
    """Run the probe exactly as the chart's exec livenessProbe does."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "alive", str(heartbeat), "--max-age", str(max_age)],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_probe_fails_before_the_worker_consumes(env, tmp_path):
    result = alive(env, tmp_path / "heartbeat", 60)
    assert result.returncode == 1
    assert "no heartbeat file" in result.stderr


@pytest.mark.slow
def test_busy_worker_is_alive_and_a_stopped_main_loop_is_not(
    env, start_worker, store, celery_app, tmp_path
):
    heartbeat = tmp_path / "heartbeat"
    worker = start_worker("--heartbeat-file", str(heartbeat))
    job, _ = submit(store, celery_app, "debug.sleep", {"seconds": 8}, "default")
    wait_state(store, job.id, "running")
    first = heartbeat.stat().st_mtime
    # The job occupies the pool process; the main loop keeps beating regardless.
    wait_for(lambda: heartbeat.stat().st_mtime > first, timeout=15, what="a second heartbeat")
    assert alive(env, heartbeat, 3).returncode == 0

    # A main process that no longer runs its loop (SIGSTOP stands in for a deadlock).
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        time.sleep(4)
        result = alive(env, heartbeat, 3)
        assert result.returncode == 1, result.stderr
        assert "stuck" in result.stderr
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_state(store, job.id, "succeeded", timeout=30)


@pytest.mark.slow
def test_a_draining_worker_stays_alive_while_it_finishes_its_job(
    env, start_worker, store, celery_app, tmp_path
):
    heartbeat = tmp_path / "heartbeat"
    worker = start_worker("--heartbeat-file", str(heartbeat), BGWORKER_SHUTDOWN_TIMEOUT="30")
    job, _ = submit(store, celery_app, "debug.sleep", {"seconds": 9}, "default")
    wait_state(store, job.id, "running")
    worker.proc.send_signal(signal.SIGTERM)
    # Warm shutdown stops the event loop (no more beats) while the job runs on.
    time.sleep(7)
    assert worker.proc.poll() is None, worker.output
    result = alive(env, heartbeat, 3)
    assert result.returncode == 0, result.stderr
    assert worker.proc.wait(30) == 0, worker.output
    assert store.get(job.id).state == "succeeded"
