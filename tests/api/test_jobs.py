"""Generic jobs: validation, queues as plain lists, records, events, cancellation, outages."""

from __future__ import annotations

import json
import time

import pytest

from tests import factories
from tests.helpers import queue_lengths, wait_for, wait_state
from worker.enqueue import submit


def post_job(api, task="debug.sleep", args=None, **extra):
    return api.post("/v1/jobs", json={"task": task, "args": args or {}, **extra})


@pytest.mark.parametrize(
    "body",
    [
        {"task": "no.such.task"},
        {"task": "debug.sleep", "args": {"seconds": "long"}},
        {"task": "debug.sleep", "args": {"seconds": 1, "extra": True}},
        {"task": "debug.sleep", "args": []},
        {"task": "debug.sleep", "priority": "urgent"},
        {"task": "debug.sleep", "delay_seconds": -1},
        {"task": "debug.sleep", "colour": "red"},
        {"args": {}},
        ["debug.sleep"],
    ],
)
def test_invalid_job_is_refused_and_nothing_is_queued(api, rclient, body):
    resp = api.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"
    assert queue_lengths(rclient) == {"critical": 0, "default": 0, "low": 0}
    assert not list(rclient.scan_iter("bgworker:job:*"))


def test_malformed_json_is_a_clear_422(api):
    resp = api.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    assert "JSON" in resp.json()["error"]["message"]


def test_debug_tasks_exist_only_when_enabled(settings):
    from starlette.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings.replace(debug_tasks=False))) as client:
        resp = post_job(client, args={"seconds": 1})
    assert resp.status_code == 422
    assert "BGWORKER_DEBUG_TASKS" in resp.json()["error"]["message"]


def test_each_queue_is_one_plain_list_whose_length_is_the_waiting_jobs(api, rclient):
    counts = {"critical": 2, "default": 3, "low": 4}
    for queue, n in counts.items():
        for _ in range(n):
            assert post_job(api, args={"seconds": 1}, priority=queue).status_code == 202
    # LLEN <queue> is what a KEDA redis trigger with listName=<queue> sees.
    assert queue_lengths(rclient) == counts
    lists = {k.decode() for k in rclient.scan_iter() if rclient.type(k) == b"list"}
    assert lists == set(counts), "no priority sub-lists or prefixed copies of a queue"
    assert api.get("/v1/queues").json()["queues"]["low"]["waiting"] == 4


def test_record_shape_and_missing_job(api):
    resp = post_job(api, args={"seconds": 1})
    assert resp.status_code == 202
    assert resp.headers["location"] == f"/v1/jobs/{resp.json()['id']}"
    record = api.get(resp.json()["links"]["self"]).json()
    assert set(record) == {
        "id",
        "kind",
        "state",
        "progress",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "result",
    }
    assert record["state"] == "queued" and record["kind"] == "debug.sleep"
    missing = api.get("/v1/jobs/" + "0" * 32)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert api.get("/v1/jobs/../../etc/passwd").status_code == 404


def test_idempotency_key_on_jobs(api, rclient):
    headers = {"Idempotency-Key": "nightly-report-2026-11-24"}
    first = api.post("/v1/jobs", json={"task": "debug.noop"}, headers=headers)
    second = api.post("/v1/jobs", json={"task": "debug.noop"}, headers=headers)
    assert first.json()["id"] == second.json()["id"]
    assert queue_lengths(rclient)["default"] == 1


def test_events_stream_progress_and_end_at_a_terminal_state(api, start_worker):
    job_id = post_job(api, args={"seconds": 2}).json()["id"]
    start_worker()
    events = []
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    # The stream closed by itself after the final state.
    states = [e["state"] for e in events]
    assert states[-1] == "succeeded"
    assert "running" in states
    progress = [e["progress"] for e in events if e["state"] == "running"]
    assert progress == sorted(progress) and len(set(progress)) >= 2


def test_cancel_a_queued_job_and_the_worker_skips_it(api, start_worker, store, rclient):
    job_id = post_job(api, args={"seconds": 5}).json()["id"]
    resp = api.delete(f"/v1/jobs/{job_id}")
    assert resp.status_code == 200
    assert resp.json()["state"] == "cancelled"
    start_worker()
    wait_for(
        lambda: queue_lengths(rclient)["default"] == 0 and rclient.hlen("unacked") == 0,
        what="the cancelled job's message to be consumed",
    )
    job = store.require(job_id)
    assert job.state == "cancelled"
    assert job.attempts == 0, "the body never ran"
    again = api.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


def test_cancel_a_running_job_stops_it(api, start_worker, store):
    start_worker()
    job_id = post_job(api, args={"seconds": 8}).json()["id"]
    wait_state(store, job_id, "running")
    cancelled_at = time.time()
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 200
    # The body notices at its next progress step (each second) and frees the worker:
    # the next job starts long before the 8 s job would have ended.
    follow = post_job(api, task="debug.noop").json()["id"]
    started = wait_state(store, follow, "succeeded", timeout=15).started_at
    assert started is not None and started - cancelled_at < 4
    job = store.require(job_id)
    assert job.state == "cancelled"
    assert job.progress < 100


def test_redis_down_gives_503_then_recovers_without_restarting_the_api(api, redis_server, rclient):
    assert api.get("/readyz").status_code == 200
    redis_server.stop()
    for resp in (
        post_job(api, args={"seconds": 1}),
        api.get("/v1/jobs/" + "a" * 32),
        api.get("/readyz"),
        api.get("/v1/queues"),
        api.post("/v1/images", content=factories.png()),
    ):
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "broker_unavailable"
        assert int(resp.headers["retry-after"]) > 0
        # Where Redis lives, and its own error text, stay in the log.
        assert str(redis_server.port) not in resp.text and "127.0.0.1" not in resp.text
    assert api.get("/healthz").status_code == 200, "the process itself is alive"

    redis_server.start()
    wait_for(lambda: api.get("/readyz").status_code == 200, what="readiness after Redis restart")
    resp = post_job(api, args={"seconds": 1})
    assert resp.status_code == 202
    assert queue_lengths(rclient)["default"] == 1


def test_metrics_expose_depths_states_dead_letters_and_durations(api, start_worker, store):
    post_job(api, args={"seconds": 1}, priority="low")
    text = api.get("/metrics").text
    assert 'bgworker_queue_depth{queue="low"} 1.0' in text
    assert 'bgworker_queue_oldest_age_seconds{queue="low"}' in text
    start_worker("--queues", "critical,default")
    done = post_job(api, task="debug.noop").json()["id"]
    wait_state(store, done, "succeeded")
    text = api.get("/metrics").text
    for name in (
        'bgworker_jobs_total{state="succeeded"} 1.0',
        "bgworker_dead_letter_size 0.0",
        'bgworker_job_duration_seconds_count{task="debug.noop"} 1.0',
        "bgworker_jobs_in_flight",
        "# TYPE bgworker_job_failures_total counter",
        "bgworker_jobs_requeued_lost_total 0.0",
    ):
        assert name in text, name
    assert 'bgworker_queue_depth{queue="low"} 1.0' in text, "the low queue is not consumed"


def test_delayed_job_waits_outside_the_queue_then_runs(api, start_worker, store, rclient):
    start_worker()
    job_id = post_job(api, task="debug.noop", delay_seconds=1).json()["id"]
    # Not in the list yet (so not counted by KEDA), but known as scheduled.
    assert queue_lengths(rclient)["default"] == 0
    assert api.get("/v1/queues").json()["scheduled"] == 1
    job = wait_state(store, job_id, "succeeded", timeout=15)
    assert job.started_at is not None and job.started_at - job.created_at >= 1
    assert api.get("/v1/queues").json()["scheduled"] == 0


def test_cancelled_delayed_job_never_runs(api, start_worker, store, rclient):
    job_id = post_job(api, task="debug.noop", delay_seconds=1).json()["id"]
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 200
    assert api.get("/v1/queues").json()["scheduled"] == 0
    assert store.require(job_id).attempts == 0


@pytest.mark.parametrize(
    ("content", "url"),
    [
        (b"[" * 60_000, "/v1/jobs"),
        (b'{"task": "debug.noop", "delay_seconds": ' + b"9" * 5000 + b"}", "/v1/jobs"),
        (b"\xff\xfe", "/v1/jobs"),
    ],
    ids=["deep-nesting", "huge-number", "not-utf8"],
)
def test_hostile_json_is_a_422_not_a_500(api, content, url):
    resp = api.post(url, content=content, headers={"Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"


def test_odd_query_values_are_422(api):
    assert api.get("/v1/dead?limit=\u00b2").status_code == 422
    assert api.get("/v1/dead?limit=0").status_code == 422
    assert api.get("/v1/jobs/" + "a" * 32 + "%0A").status_code == 404


def test_events_resume_after_the_last_event_ends_the_stream(api, start_worker, store):
    start_worker()
    job_id = post_job(api, task="debug.noop").json()["id"]
    wait_state(store, job_id, "succeeded")
    with api.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
        ids = [line[4:] for line in resp.iter_lines() if line.startswith("id: ")]
    assert len(ids) == 1, "a finished job's stream is its final record, then the end"
    # What an EventSource does when the stream closes: reconnect with Last-Event-ID.
    again = api.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": ids[-1]})
    assert again.status_code == 204, "204 tells EventSource to stop reconnecting"
    bad = api.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422


def test_events_resume_replays_what_was_missed(api, start_worker, store):
    job_id = post_job(api, args={"seconds": 1}).json()["id"]
    start_worker()
    wait_state(store, job_id, "succeeded")
    # Resuming from the very first event replays every later change, to the end.
    first = store.client.xrange(f"bgworker:job:{job_id}:events", count=1)[0][0].decode()
    with api.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": first}) as resp:
        states = [
            json.loads(line[6:])["state"] for line in resp.iter_lines() if line.startswith("data: ")
        ]
    assert states[0] == "running" and states[-1] == "succeeded"


def test_a_scheduled_job_is_published_by_the_apis_promoter(api, start_worker, store, rclient):
    # A queued record whose message waits in the schedule (a delayed job, due in 0.5 s):
    # the API's promoter publishes it, with no worker or client doing anything more.
    job, _ = store.create("debug.noop", {}, "default", due=time.time() + 0.5)
    assert queue_lengths(rclient)["default"] == 0
    start_worker()
    assert wait_state(store, job.id, "succeeded", timeout=15).attempts == 1


def test_a_published_job_leaves_no_safety_net_behind(api, rclient):
    post_job(api, task="debug.noop")
    assert queue_lengths(rclient)["default"] == 1
    assert api.get("/v1/queues").json()["scheduled"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/{id}:events"),
        ("DELETE", "/v1/jobs/{id}:events"),
        ("GET", "/v1/jobs/{id}:events/events"),
        ("POST", "/v1/dead/{id}:events/retry"),
        ("GET", "/v1/jobs/..%2F{id}"),
        ("DELETE", "/v1/jobs/{ID}"),
    ],
)
def test_ids_not_of_our_format_answer_404_and_touch_nothing(
    api, store, celery_app, rclient, method, path
):
    """Before any Redis key is built from it: "<id>:events" is the job's event stream."""
    job_id = submit(store, celery_app, "debug.noop", {}, "low")[0].id
    before = {k: rclient.type(k) for k in rclient.scan_iter()}
    resp = api.request(method, path.format(id=job_id, ID=job_id.upper()))
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "not_found"
    assert {k: rclient.type(k) for k in rclient.scan_iter()} == before
    assert store.require(job_id).state == "queued"


def test_every_response_forbids_content_sniffing(api, start_worker, store):
    job = post_job(api, task="debug.noop")
    for resp in (
        job,
        api.get("/healthz"),
        api.get(job.json()["links"]["self"]),
        api.get("/v1/jobs/nope"),
        api.get("/metrics"),
        api.get("/v1/images/" + "a" * 32 + "/640"),
        api.post("/v1/jobs", content=b"{"),
    ):
        assert resp.headers["x-content-type-options"] == "nosniff", resp.request.url
    start_worker()
    wait_state(store, job.json()["id"], "succeeded")
    with api.stream("GET", job.json()["links"]["events"]) as events:
        assert events.headers["x-content-type-options"] == "nosniff"
