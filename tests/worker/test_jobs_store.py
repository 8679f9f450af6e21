"""Job records under concurrency: idempotency keys and transitions hold under races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from worker.jobs import STATS_STATES


def test_concurrent_requests_with_one_idempotency_key_create_one_job(store, rclient):
    def create(_: int):
        return store.create("debug.noop", {}, "default", idempotency="same-key")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(32)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert len(list(rclient.scan_iter("bgworker:job:*[0-9a-f]"))) == 1
    assert int(rclient.hget(STATS_STATES, "queued")) == 1


def test_a_finished_job_cannot_move_backwards(store):
    job, _ = store.create("debug.noop", {}, "default")
    assert store.begin(job.id)[0] is not None
    assert store.succeed(job.id, None, 0.1)
    # A late duplicate delivery of the same message:
    again, state = store.begin(job.id)
    assert again is None and state == "succeeded"
    assert not store.fail(job.id, {"code": "x", "message": "late"}, dead=False)
    assert store.require(job.id).state == "succeeded"


def test_records_expire_after_the_retention(store, rclient, settings):
    job, _ = store.create("debug.noop", {}, "default")
    assert 0 < rclient.ttl(f"bgworker:job:{job.id}") <= settings.job_retention_seconds
    assert 0 < rclient.ttl(f"bgworker:job:{job.id}:events") <= settings.job_retention_seconds
    store.begin(job.id)
    # Every change starts the retention again.
    assert rclient.ttl(f"bgworker:job:{job.id}") > settings.job_retention_seconds - 5


def test_requeued_applies_only_to_the_start_it_interrupted(store):
    """A shutdown deadline puts the record back to queued; a job that moved on is left alone."""
    job, _ = store.create("debug.noop", {}, "default")
    started, _ = store.begin(job.id)
    assert started is not None and started.attempts == 1
    store.set_progress(job.id, 40)
    # Another worker already started it again (attempt 2): the old start's requeue is stale.
    store.begin(job.id)
    assert not store.requeued(job.id, 1)
    assert store.require(job.id).state == "running"
    assert store.requeued(job.id, 2)
    back = store.require(job.id)
    assert (back.state, back.progress, back.attempts) == ("queued", 0, 2)
    # ... and a finished job never goes back.
    store.begin(job.id)
    store.succeed(job.id, None, 0.1)
    assert not store.requeued(job.id, 3)
    assert store.require(job.id).state == "succeeded"
