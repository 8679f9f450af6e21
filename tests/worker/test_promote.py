"""Scheduled jobs and dead-letter replays reach their queue once: one script each, real Redis."""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers import queue_lengths
from worker.enqueue import promote_due, replay_dead
from worker.errors import Conflict
from worker.jobs import DEAD_SET, SCHEDULED_SET
from worker.message import message_builder


def _scheduled(store, count: int) -> list[str]:
    past = time.time() - 1
    return [store.create("debug.noop", {}, "default", due=past)[0].id for _ in range(count)]


def test_racing_promoters_queue_each_due_job_exactly_once(store, celery_app, rclient):
    ids = _scheduled(store, 60)
    published: list[int] = []
    start = threading.Barrier(4)

    def promoter() -> None:
        start.wait()
        for _ in range(5):
            # A lease of 0 s: every claim is stale at once, so the promoters keep taking
            # the same jobs from each other, the worst case for a double publish.
            published.append(promote_due(store, celery_app, lease=0.0))

    threads = [threading.Thread(target=promoter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(published) == len(ids)
    assert queue_lengths(rclient)["default"] == len(ids)
    assert rclient.zcard(SCHEDULED_SET) == 0


def test_a_stale_claim_publishes_nothing(store, celery_app, rclient):
    [job_id] = _scheduled(store, 1)
    message = message_builder(celery_app).build(job_id, "debug.noop", {}, "default", time.time())
    _, first_lease = store.claim_due(time.time(), lease=0.0)
    # The first promoter stalls past its lease; a second one claims the job meanwhile.
    claimed, second_lease = store.claim_due(time.time() + 0.001, lease=30.0)
    assert claimed == [job_id]
    assert not store.promote(job_id, first_lease, message)
    assert queue_lengths(rclient)["default"] == 0
    assert store.promote(job_id, second_lease, message)
    assert queue_lengths(rclient)["default"] == 1
    assert not store.promote(job_id, second_lease, message), "a second push of one claim"
    assert queue_lengths(rclient)["default"] == 1


def test_a_cancelled_scheduled_job_leaves_the_schedule_unqueued(store, celery_app, rclient):
    [job_id] = _scheduled(store, 1)
    store.cancel(job_id)
    assert promote_due(store, celery_app) == 0
    assert queue_lengths(rclient)["default"] == 0
    assert rclient.zcard(SCHEDULED_SET) == 0


def test_replaying_a_dead_job_revives_and_queues_it_in_one_step(store, celery_app, rclient):
    job, _ = store.create("debug.noop", {}, "low")
    store.begin(job.id)
    store.fail(job.id, {"code": "x", "message": "gave up"}, dead=True)
    assert rclient.zscore(DEAD_SET, job.id) is not None
    replayed = replay_dead(store, celery_app, job.id)
    assert (replayed.state, replayed.retries, replayed.deliveries) == ("queued", 0, 0)
    assert rclient.zscore(DEAD_SET, job.id) is None
    assert queue_lengths(rclient) == {"critical": 0, "default": 0, "low": 1}
    # No safety-net schedule: the message is already on its queue.
    assert rclient.zcard(SCHEDULED_SET) == 0
    # A second replay finds it queued, not dead, and pushes nothing.
    with pytest.raises(Conflict, match="only dead jobs can be replayed"):
        replay_dead(store, celery_app, job.id)
    assert queue_lengths(rclient)["low"] == 1
