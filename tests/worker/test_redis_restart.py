"""A Redis restart loses nothing: queued jobs and the job in hand all finish."""

from __future__ import annotations

import time

import pytest

from tests.helpers import wait_state
from worker.enqueue import submit

pytestmark = pytest.mark.slow


def test_jobs_survive_a_redis_restart(start_worker, store, celery_app, redis_server, settings):
    start_worker()
    running = submit(store, celery_app, "debug.sleep", {"seconds": 3}, "default")[0].id
    queued = [submit(store, celery_app, "debug.noop", {}, "low")[0].id for _ in range(3)]
    wait_state(store, running, "running")

    redis_server.stop()  # SIGTERM: Redis writes its append-only file and exits
    redis_server.start()  # same port, same data directory

    # The interrupted one may run again (late acks); each ends succeeded exactly once.
    timeout = settings.visibility_timeout + 60
    for job_id in [running, *queued]:
        assert (
            wait_state(store, job_id, "succeeded", "failed", "dead", timeout=timeout).state
            == "succeeded"
        )


def test_job_whose_progress_cannot_be_recorded_runs_again(
    start_worker, store, celery_app, redis_server, settings
):
    start_worker()
    job_id = submit(store, celery_app, "debug.sleep", {"seconds": 3}, "default")[0].id
    wait_state(store, job_id, "running")
    redis_server.stop()
    # Down across at least one progress report (one a second): the task cannot record.
    time.sleep(2.5)
    redis_server.start()
    job = wait_state(
        store, job_id, "succeeded", "failed", "dead", timeout=settings.visibility_timeout + 60
    )
    assert job.state == "succeeded"
    assert job.attempts == 2, "the interrupted run was not counted as done"


def test_dropped_broker_connection_does_not_run_the_job_twice_at_once(
    start_worker, store, celery_app, rclient
):
    worker = start_worker("--concurrency", "2")
    job_id = submit(store, celery_app, "debug.sleep", {"seconds": 3}, "default")[0].id
    wait_state(store, job_id, "running")
    # Redis stays up; only the connections drop (a proxy, a failover, an idle-kill).
    rclient.client_kill_filter(_type="normal", skipme=True)
    assert wait_state(store, job_id, "succeeded", timeout=60).state == "succeeded"
    # Proving an absence takes time: a second body, had one started, would have begun
    # before the success above and ends within the job's 3 s.
    time.sleep(4)
    finished = worker.output.count(f"debug.sleep[{job_id}] succeeded")
    assert finished == 1, worker.output
