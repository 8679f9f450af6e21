"""Transient errors retry with backoff, then dead-letter; permanent errors fail at once."""

from __future__ import annotations

from tests.helpers import wait_for, wait_state


def post(api, **args):
    resp = api.post("/v1/jobs", json={"task": "debug.flaky", "args": args})
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def test_transient_failure_is_retried_then_succeeds(api, start_worker, store):
    start_worker()
    job_id = post(api, fail_times=1)
    job = wait_state(store, job_id, "succeeded", "dead", "failed")
    assert job.state == "succeeded"
    assert job.attempts == 2
    assert job.error is None


def test_exhausted_retries_go_dead_and_can_be_replayed(api, start_worker, store, settings):
    start_worker()
    # Fails max_retries + 1 times: every attempt it is allowed.
    job_id = post(api, fail_times=settings.max_retries + 1)
    job = wait_state(store, job_id, "dead", "succeeded", "failed", timeout=60)
    assert job.state == "dead"
    assert job.attempts == settings.max_retries + 1
    assert job.error is not None and "gave up after" in job.error["message"]

    dead = api.get("/v1/dead").json()
    assert dead["count"] == 1
    assert [j["id"] for j in dead["jobs"]] == [job_id]
    assert dead["jobs"][0]["args"] == {"fail_times": settings.max_retries + 1, "permanent": False}
    assert "bgworker_dead_letter_size 1.0" in api.get("/metrics").text

    resp = api.post(f"/v1/dead/{job_id}/retry")
    assert resp.status_code == 202
    job = wait_state(store, job_id, "succeeded", "dead", "failed")
    assert job.state == "succeeded", "the next attempt is past fail_times"
    assert api.get("/v1/dead").json()["count"] == 0
    again = api.post(f"/v1/dead/{job_id}/retry")
    assert again.status_code == 409, "only dead jobs can be replayed"


def test_permanent_failure_is_not_retried(api, start_worker, store):
    start_worker()
    job_id = post(api, fail_times=3, permanent=True)
    job = wait_state(store, job_id, "failed", "succeeded", "dead")
    assert job.state == "failed"
    assert job.attempts == 1
    assert job.error == {
        "code": "permanent_error",
        "message": "failing on purpose (attempt 1 of 3)",
    }
    assert api.get("/v1/dead").json()["count"] == 0
    text = api.get("/metrics").text
    assert 'bgworker_job_failures_total{code="permanent_error",task="debug.flaky"} 1.0' in text


def test_soft_time_limit_is_retried_then_dead_letters(api, start_worker, store, settings):
    # This worker gives debug.sleep 1 s; the job asks for 4.
    start_worker(BGWORKER_TASK_TIME_LIMITS='{"debug.sleep": [1, 2]}')
    resp = api.post("/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 4}})
    job = wait_state(store, resp.json()["id"], "dead", "succeeded", "failed", timeout=60)
    assert job.state == "dead"
    assert job.attempts == settings.max_retries + 1
    assert job.error is not None and "soft time limit" in job.error["message"]


def test_hard_time_limit_kills_the_job_and_fails_it(api, start_worker, store, rclient):
    worker = start_worker(BGWORKER_TASK_TIME_LIMITS='{"debug.sleep": [1, 2]}')
    resp = api.post(
        "/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 5, "ignore_soft_limit": True}}
    )
    job = wait_state(store, resp.json()["id"], "failed", "succeeded", "dead", timeout=30)
    assert job.state == "failed", worker.output
    assert job.error is not None and job.error["code"] == "time_limit"
    # The worker replaced the killed pool process and goes on.
    follow = api.post("/v1/jobs", json={"task": "debug.noop"}).json()["id"]
    wait_state(store, follow, "succeeded")
    wait_for(lambda: rclient.hlen("unacked") == 0, what="the killed job's message to be settled")
    assert rclient.llen("default") == 0
    assert store.require(job.id).attempts == 1, "a job killed at its hard limit is not run again"
