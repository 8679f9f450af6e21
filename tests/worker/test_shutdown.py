"""Nothing lost: SIGTERM, a shutdown deadline, SIGKILL, signals to the wrong processes."""

from __future__ import annotations

import datetime
import os
import signal
import time

import pytest

from tests.helpers import queue_lengths, wait_for, wait_state
from worker.enqueue import submit
from worker.jobs import STATS_STATES, events_key

pytestmark = pytest.mark.slow

# Far longer than the 2 s jobs below: a worker that leaves early left by itself.
LONG_TIMEOUT = "30"


# The least the chart adds to the shutdown timeout for the grace period
# (worker.terminationGraceMarginSeconds, at least 10).
GRACE_MARGIN = 10


def log_times(output: str, *markers: str) -> dict[str, float]:
    """When each marker first appears in a worker's log, in seconds (Celery's timestamps)."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        for marker in markers:
            if marker in line and marker not in found and line.startswith("["):
                stamp = line[1:24]  # 2026-12-02 22:06:33,742
                when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
                found[marker] = when.timestamp()
    missing = [m for m in markers if m not in found]
    assert not missing, f"no {missing} in the worker's log:\n{output}"
    return found


def sleep_job(store, celery_app, seconds: float) -> str:
    job, _ = submit(store, celery_app, "debug.sleep", {"seconds": seconds}, "default")
    return job.id


def events(rclient, job_id: str) -> list[dict[str, str]]:
    """The job's event stream, oldest first (each entry a copy of the record)."""
    return [
        {k.decode(): v.decode() for k, v in f.items()}
        for _, f in rclient.xrange(events_key(job_id))
    ]


def successes(rclient) -> int:
    return int(rclient.hget(STATS_STATES, "succeeded") or 0)


def warm_exit(worker) -> None:
    """The worker left through the warm path: no deadline, no cancelled job."""
    assert "deadline" not in worker.output, worker.output
    assert "Cold shutdown" not in worker.output, worker.output


def test_sigterm_finishes_the_job_in_hand_and_exits_0(start_worker, store, celery_app, rclient):
    worker = start_worker(BGWORKER_SHUTDOWN_TIMEOUT=LONG_TIMEOUT)
    job_id = sleep_job(store, celery_app, 2)
    wait_state(store, job_id, "running")
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=40) == 0, worker.output
    elapsed = time.monotonic() - t0
    job = store.require(job_id)
    assert job.state == "succeeded", worker.output
    assert job.attempts == 1
    # It left as soon as the job was done, not after the whole shutdown timeout.
    assert elapsed < 15, worker.output
    warm_exit(worker)
    assert queue_lengths(rclient)["default"] == 0
    assert rclient.hlen("unacked") == 0, "the finished job's message must be acknowledged"


def test_job_longer_than_the_deadline_is_requeued_and_finished_by_another_worker(
    start_worker, store, celery_app, rclient, settings
):
    first = start_worker()
    job_id = sleep_job(store, celery_app, 6)
    wait_state(store, job_id, "running")
    t0 = time.monotonic()
    first.signal(signal.SIGTERM)
    first.wait(timeout=settings.shutdown_timeout + 15)
    # The deadline fired on time (the worker's own clock, in its log), and the worker left
    # within the margin the chart adds to the grace period (Celery's cold shutdown and
    # the pool's teardown take a few seconds more on a busy machine).
    stamps = log_times(first.output, "SIGTERM received", "shutdown deadline of")
    fired = stamps["shutdown deadline of"] - stamps["SIGTERM received"]
    assert settings.shutdown_timeout <= fired < settings.shutdown_timeout + 1, first.output
    assert time.monotonic() - t0 < settings.shutdown_timeout + GRACE_MARGIN, first.output
    assert "Restoring 1 unacknowledged message" in first.output, first.output
    # Back on its queue, waiting: visible to KEDA's LLEN again.
    assert queue_lengths(rclient)["default"] == 1
    assert rclient.hlen("unacked") == 0
    # The record says so too: queued again, from the start, once the message was back.
    requeued = store.require(job_id)
    assert (requeued.state, requeued.progress, requeued.attempts) == ("queued", 0, 1)
    history = [e["state"] for e in events(rclient, job_id)]
    assert history[-2:] == ["running", "queued"], history

    start_worker()
    job = wait_state(store, job_id, "succeeded", "failed", "dead", timeout=30)
    assert job.state == "succeeded"
    assert job.attempts == 2
    assert successes(rclient) == 1


def test_sigkill_mid_job_is_redelivered_after_the_visibility_timeout(
    start_worker, store, celery_app, rclient, settings
):
    first = start_worker()
    job_id = sleep_job(store, celery_app, 3)
    wait_state(store, job_id, "running")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    # The message waits in kombu's unacked hash, not in the list, since its delivery.
    assert rclient.hlen("unacked") == 1
    [(_, delivered_at)] = rclient.zrange("unacked_index", 0, -1, withscores=True)

    start_worker()
    wait_for(
        lambda: store.require(job_id).attempts == 2,
        timeout=settings.visibility_timeout + 30,
        interval=0.02,
        what="the second start of the job",
    )
    delay = time.time() - delivered_at
    wait_state(store, job_id, "succeeded", timeout=30)
    # Not before the visibility timeout (a running job is never handed out twice), and
    # soon after it: a live worker scans every restore interval.
    assert settings.visibility_timeout <= delay
    assert delay <= settings.visibility_timeout + settings.restore_interval + 10
    assert successes(rclient) == 1
    # The outcome is recorded before the message is acknowledged (a crash in between
    # reruns a finished job, which is skipped): the ack follows within moments.
    wait_for(lambda: rclient.hlen("unacked") == 0, timeout=10, what="the ack of the rerun")


def test_sigterm_to_the_whole_process_group_still_finishes_the_job(start_worker, store, celery_app):
    worker = start_worker(BGWORKER_SHUTDOWN_TIMEOUT=LONG_TIMEOUT)
    job_id = sleep_job(store, celery_app, 2)
    wait_state(store, job_id, "running")
    os.killpg(worker.pid, signal.SIGTERM)  # what an init that signals the group would do
    assert worker.wait(timeout=40) == 0, worker.output
    job = store.require(job_id)
    assert job.state == "succeeded", worker.output
    assert job.attempts == 1
    warm_exit(worker)


def test_sigterm_to_a_pool_child_does_not_stop_the_worker_nor_lose_the_job(
    start_worker, store, celery_app, rclient
):
    worker = start_worker()
    job_id = sleep_job(store, celery_app, 2)
    wait_state(store, job_id, "running")
    children = wait_for(worker.children, what="pool child")
    os.kill(children[0], signal.SIGTERM)
    job = wait_state(store, job_id, "succeeded", timeout=30)
    assert worker.proc.poll() is None, "the worker itself must keep running"
    assert job.attempts == 2, "the killed child's job was requeued and run again"
    assert successes(rclient) == 1
    # And it keeps serving new work.
    again = sleep_job(store, celery_app, 0)
    wait_state(store, again, "succeeded")


def test_idle_worker_exits_at_once_on_sigterm(start_worker):
    worker = start_worker(BGWORKER_SHUTDOWN_TIMEOUT=LONG_TIMEOUT)
    t0 = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 8


def test_job_that_kills_its_worker_every_time_ends_dead(start_worker, store, celery_app):
    """The out-of-memory loop: each start dies with its pool process."""
    worker = start_worker()
    job_id = sleep_job(store, celery_app, 8)
    for start in range(1, 5):
        wait_for(lambda s=start: store.require(job_id).attempts == s, what=f"start {start}")
        os.kill(wait_for(worker.children, what="pool process")[0], signal.SIGKILL)
    job = wait_state(store, job_id, "dead", "succeeded", "failed", timeout=30)
    assert job.state == "dead"
    assert job.error is not None and job.error["code"] == "worker_lost"
    assert job.attempts == 5, "the fifth delivery is counted, then refused"
    assert worker.proc.poll() is None, "the worker survives it all"
