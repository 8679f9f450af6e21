"""The one-script enqueue: its message is exactly what send_task pushes, and it is atomic."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
import redis.asyncio as aioredis

from tests.helpers import queue_lengths, wait_state
from worker.enqueue import publish, submit, submit_async
from worker.jobs import ACTIVE_SET, AsyncJobStore, job_key, new_id
from worker.message import message_builder
from worker.queues import ENQUEUED_AT_HEADER, QUEUES

# What legitimately differs between two publishes of the same job: kombu's per-message
# delivery tag (a fresh uuid) and our enqueue time.
VARYING = (("properties", "delivery_tag"), ("headers", ENQUEUED_AT_HEADER))


def _only_entry(client: redis.Redis) -> tuple[str, bytes]:
    lists = [k.decode() for k in client.scan_iter() if client.type(k) == b"list"]
    assert len(lists) == 1, lists
    entries = client.lrange(lists[0], 0, -1)
    assert len(entries) == 1
    client.delete(lists[0])
    return lists[0], entries[0]


@pytest.mark.parametrize("queue", QUEUES)
@pytest.mark.parametrize(
    "args",
    [{}, {"widths": [320, 640]}, {"seconds": 1.5, "name": 'é ✓ "quoted"', "none": None}],
    ids=["empty", "list", "unicode"],
)
def test_built_message_is_what_send_task_pushes(celery_app, store, rclient, queue, args):
    job, _ = store.create("debug.sleep", args, queue)  # the record only, no message
    publish(celery_app, job)  # real send_task, through kombu's Redis transport
    real_list, real_raw = _only_entry(rclient)
    built_list, built_raw = message_builder(celery_app).build(
        job.id, job.kind, job.args, job.queue, time.time()
    )
    assert built_list == real_list == queue, "the queue's own list, no priority sub-list"

    real, built = json.loads(real_raw), json.loads(built_raw)
    assert (
        set(real)
        == set(built)
        == {
            "body",
            "content-encoding",
            "content-type",
            "headers",
            "properties",
        }
    )
    for section in ("headers", "properties"):
        assert set(real[section]) == set(built[section]), section
        for name in real[section]:
            if (section, name) in VARYING:
                continue
            assert built[section][name] == real[section][name], (section, name)
    for name in ("body", "content-encoding", "content-type"):
        assert built[name] == real[name], name
    assert real["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
    assert real["properties"]["body_encoding"] == "base64"
    assert real["headers"]["id"] == built["headers"]["id"] == job.id
    for section, name in VARYING:
        assert built[section][name] and built[section][name] != real[section][name]

    # And byte for byte, once the varying fields are made equal: same keys, same order,
    # same serialization.
    for section, name in VARYING:
        built[section][name] = real[section][name]
    assert json.dumps(built) == json.dumps(real)
    assert json.dumps(real).encode() == real_raw, "kombu's envelope is plain json.dumps"


def test_submit_is_one_script_leaving_no_safety_net(store, celery_app, rclient):
    submit(store, celery_app, "debug.noop", {}, "critical")  # loads the script into Redis
    before = rclient.info("commandstats")
    job, created = submit(store, celery_app, "debug.noop", {}, "low")
    after = rclient.info("commandstats")
    assert created
    calls = {
        name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
        if after[name]["calls"] != before.get(name, {"calls": 0})["calls"]
    }
    assert calls.get("cmdstat_evalsha") == 1 and "cmdstat_eval" not in calls, calls
    # One ZADD: the active index the reaper reads (worker.reaper), not a safety schedule.
    assert calls.get("cmdstat_zadd") == 1 and "cmdstat_zrem" not in calls, calls
    assert rclient.zscore(ACTIVE_SET, job.id) is not None
    assert queue_lengths(rclient)["low"] == 1
    assert rclient.zcard("bgworker:scheduled") == 0
    entry = json.loads(rclient.lindex("low", 0))
    assert entry["headers"]["id"] == job.id and entry["headers"]["task"] == "debug.noop"


def test_a_failing_script_leaves_neither_record_nor_message(store, celery_app, rclient):
    # The queue's key holds a string: the LPUSH, the script's first write, fails.
    rclient.set("default", "not a list")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        submit(store, celery_app, "debug.noop", {}, "default", idempotency="k1")
    assert not list(rclient.scan_iter("bgworker:*")), "no record, event, key or statistic"


def test_running_the_same_script_twice_pushes_one_message(store, celery_app, rclient):
    # What a redis-py retry after a lost reply does: the same job id, the same message.
    job_id = new_id()
    message = message_builder(celery_app).build(job_id, "debug.noop", {}, "default", time.time())
    first = store.create("debug.noop", {}, "default", job_id=job_id, message=message)
    second = store.create("debug.noop", {}, "default", job_id=job_id, message=message)
    assert first[1] and second[1], "both report the job as created (by this call)"
    assert second[0].id == job_id and second[0].state == "queued"
    assert rclient.llen("default") == 1
    assert rclient.xlen(f"{job_key(job_id)}:events") == 1
    assert rclient.hget("bgworker:stats:states", "queued") == b"1"


def test_idempotent_submit_returns_the_earlier_record_and_pushes_nothing(
    store, celery_app, rclient
):
    first, created = submit(store, celery_app, "debug.noop", {}, "default", idempotency="x")
    again, created_again = submit(store, celery_app, "debug.noop", {}, "default", idempotency="x")
    assert created and not created_again
    assert again == first
    assert rclient.llen("default") == 1


def test_workers_run_jobs_submitted_on_the_event_loop(start_worker, store, celery_app, settings):
    async def enqueue() -> list[str]:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            jobs = AsyncJobStore(client, settings.job_retention_seconds)
            ids = []
            for queue in QUEUES:
                job, created = await submit_async(
                    jobs, celery_app, "debug.sleep", {"seconds": 0}, queue
                )
                assert created
                ids.append(job.id)
            delayed, _ = await submit_async(
                jobs, celery_app, "debug.noop", {}, "default", countdown=0.5
            )
            assert await client.llen("default") == 1, "the delayed job is not in the list yet"
            return [*ids, delayed.id]
        finally:
            await client.aclose()

    ids = asyncio.run(enqueue())
    start_worker("--queues", ",".join(QUEUES))
    for job_id in ids[:-1]:
        assert wait_state(store, job_id, "succeeded").attempts == 1
    # Delayed jobs still go through the scheduled set; with no API running here, promote
    # the way the API's promoter does.
    from worker.enqueue import promote_due

    time.sleep(0.6)
    assert promote_due(store, celery_app) == 1
    assert wait_state(store, ids[-1], "succeeded").attempts == 1


def test_submit_on_the_event_loop_gives_up_on_a_silent_redis(rclient, settings, celery_app):
    # A Redis that accepts connections but does not answer: the API's asyncio client has
    # no socket timeout, so the store bounds each call (the route answers 503).
    async def attempt() -> float:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            jobs = AsyncJobStore(client, settings.job_retention_seconds, timeout=0.3)
            assert await jobs.find_idempotent("warm-up") is None  # connected
            rclient.client_pause(1500)
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                await submit_async(jobs, celery_app, "debug.noop", {}, "default")
            return time.monotonic() - started
        finally:
            await client.aclose()

    assert asyncio.run(attempt()) < 1.0
