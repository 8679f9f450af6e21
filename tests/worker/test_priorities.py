"""A worker consuming several queues empties them strictly in priority order."""

from __future__ import annotations

from tests.helpers import wait_state
from worker.enqueue import submit


def test_critical_then_default_then_low(start_worker, store, celery_app):
    ids = {}
    # Enqueued in the reverse of the order they must run in.
    for queue in ("low", "default", "critical"):
        ids[queue] = [submit(store, celery_app, "debug.noop", {}, queue)[0].id for _ in range(3)]
    start_worker("--concurrency", "1", "--queues", "low,default,critical")
    started = {}
    for job_ids in ids.values():
        for job_id in job_ids:
            started[job_id] = wait_state(store, job_id, "succeeded").started_at
    order = sorted(started, key=started.__getitem__)
    expected = ids["critical"] + ids["default"] + ids["low"]
    # Within one queue FIFO, across queues strictly by priority.
    assert order == expected


def test_worker_only_takes_its_own_queues(start_worker, store, celery_app, rclient):
    low = submit(store, celery_app, "debug.noop", {}, "low")[0].id
    crit = submit(store, celery_app, "debug.noop", {}, "critical")[0].id
    start_worker("--queues", "critical")
    wait_state(store, crit, "succeeded")
    assert store.require(low).state == "queued"
    assert rclient.llen("low") == 1
