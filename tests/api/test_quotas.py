"""What one client may consume: requests per key, jobs per queue, Redis' memory."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from tests.helpers import queue_lengths, wait_state
from worker.auth import KeyStore
from worker.enqueue import submit
from worker.settings import Settings

JOB = {"task": "debug.noop"}


def app(env: dict[str, str], **extra: str) -> TestClient:
    settings = Settings.from_env({**env, **extra})
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_each_key_has_its_own_rate_shared_by_every_api_process(env, rclient):
    keys = KeyStore(rclient)
    _, busy = keys.create("busy client")
    _, calm = keys.create("calm client")
    limits = {"BGWORKER_AUTH": "required", "BGWORKER_RATE_LIMIT_PER_SECOND": "1"}
    limits["BGWORKER_RATE_LIMIT_BURST"] = "3"
    # Two API processes (two apps) draw from one budget per key, kept in Redis.
    with app(env, **limits) as one, app(env, **limits) as two:
        headers = {"Authorization": f"Bearer {busy}"}
        codes = [c.post("/v1/jobs", json=JOB, headers=headers).status_code for c in (one, two, one)]
        assert codes == [202, 202, 202]
        refused = two.post("/v1/jobs", json=JOB, headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        assert queue_lengths(rclient)["default"] == 3, "a refused request changes nothing"
        calm_headers = {"Authorization": f"Bearer {calm}"}
        assert one.post("/v1/jobs", json=JOB, headers=calm_headers).status_code == 202
        time.sleep(float(refused.headers["retry-after"]))
        assert one.post("/v1/jobs", json=JOB, headers=headers).status_code == 202


def test_a_full_queue_refuses_new_jobs_but_answers_retries(env, rclient):
    with app(env, BGWORKER_MAX_QUEUED_JOBS="2") as api:
        key = {"Idempotency-Key": "first"}
        first = api.post("/v1/jobs", json=JOB, headers=key)
        assert api.post("/v1/jobs", json=JOB).status_code == 202
        full = api.post("/v1/jobs", json=JOB)
        assert full.status_code == 503, full.text
        assert full.json()["error"]["code"] == "queue_full"
        assert "BGWORKER_MAX_QUEUED_JOBS" in full.json()["error"]["message"]
        assert int(full.headers["retry-after"]) > 0
        assert queue_lengths(rclient)["default"] == 2
        assert len([k for k in rclient.scan_iter("bgworker:job:*") if b":events" not in k]) == 2
        again = api.post("/v1/jobs", json=JOB, headers=key)
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        # Another queue has room of its own.
        assert api.post("/v1/jobs", json={**JOB, "priority": "low"}).status_code == 202


@pytest.mark.slow
def test_new_jobs_stop_short_of_maxmemory_so_workers_can_finish(
    env, rclient, store, celery_app, start_worker
):
    waiting = submit(store, celery_app, "debug.noop", {}, "default")[0].id
    used = int(rclient.info("memory")["used_memory"])
    rclient.config_set("maxmemory-policy", "noeviction")
    # 4 MB of room for the worker's connections and writes, all inside the headroom.
    limit = used + 4_000_000
    headroom = min(90, int(100 * (1 - used / limit)) + 5)
    rclient.config_set("maxmemory", str(limit))
    with app(env, BGWORKER_REDIS_MEMORY_HEADROOM_PERCENT=str(headroom)) as api:
        refused = api.post("/v1/jobs", json=JOB)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "queue_full"
        assert "nearly full" in refused.json()["error"]["message"]
    # Redis itself still takes writes: the queued job runs and its outcome is recorded.
    start_worker()
    assert wait_state(store, waiting, "succeeded", "failed", "dead").state == "succeeded"
