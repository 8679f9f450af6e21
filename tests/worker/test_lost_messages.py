"""The windows a chaos soak found, each reproduced on purpose with real processes.

A message is lost when it leaves its queue's list (a worker's BRPOP) and never reaches
kombu's ``unacked`` hash (the worker's second round trip): a worker killed while Redis
serves its BRPOP, a Redis killed right after the pop, or a ``maxmemory`` that refuses the
registration. The API's reaper (worker.reaper) must queue such a job again. A Redis
outage that cancels a running job must not count towards the poison-message guard, and a
restore lock left behind must not freeze redelivery for minutes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis

from tests.helpers import WorkerProcess, wait_for, wait_state
from worker.enqueue import promote_due, submit
from worker.jobs import JobStore
from worker.reaper import STATS_REAPED, Reaper
from worker.redis_server import RedisServer
from worker.settings import Settings
from worker.tasks.base import MAX_DELIVERIES

pytestmark = pytest.mark.slow

# The reaper looks every restore interval and queues a job found lost in two passes in a
# row, after a count that came up short twice: about four intervals, plus the run.


def reaper_bound(settings: Settings) -> float:
    return 5 * settings.restore_interval + 15


def blocked_in_brpop(client: redis.Redis) -> list[dict[str, object]]:
    return [c for c in client.client_list() if c.get("cmd") == "brpop" and "b" in str(c["flags"])]


def popped_nowhere(client: redis.Redis) -> bool:
    return client.llen("default") == 0 and client.hlen("unacked") == 0


def freeze_with_a_served_brpop(
    start_worker: Callable[..., WorkerProcess],
    store: JobStore,
    celery_app: object,
    rclient: redis.Redis,
) -> tuple[WorkerProcess, str]:
    """A worker stopped (SIGSTOP) while its BRPOP waits; then a job whose message Redis
    hands to that BRPOP: popped from the list, in the frozen worker's socket, unregistered.

    kombu's BRPOP times out every second and a frozen worker sends no new one, so the
    drill is repeated until Redis served the job to the frozen worker in time.
    """
    for _ in range(10):
        worker = start_worker()
        wait_for(lambda: blocked_in_brpop(rclient), timeout=10, what="the worker's BRPOP")
        os.kill(worker.pid, signal.SIGSTOP)
        if not blocked_in_brpop(rclient):  # its BRPOP timed out just then: try again
            worker.stop()
            continue
        job_id = submit(store, celery_app, "debug.sleep", {"seconds": 0.5}, "default")[0].id
        time.sleep(0.3)
        if popped_nowhere(rclient):
            return worker, job_id
        worker.stop()
        # The BRPOP had timed out: the message waits on the list; take it away for the
        # next try (it is a job nobody will run otherwise).
        rclient.delete("default")
        store.cancel(job_id)
    raise AssertionError("could not get a frozen worker's BRPOP served in 10 tries")


def test_worker_killed_while_its_brpop_is_served_loses_no_job(
    api, start_worker, store, celery_app, rclient, settings
):
    frozen, job_id = freeze_with_a_served_brpop(start_worker, store, celery_app, rclient)
    os.killpg(frozen.pid, signal.SIGKILL)
    frozen.wait(timeout=10)
    assert store.require(job_id).state == "queued"
    assert popped_nowhere(rclient), "the drill must leave the message nowhere"

    start_worker()
    job = wait_state(store, job_id, "succeeded", "failed", "dead", timeout=reaper_bound(settings))
    assert job.state == "succeeded"
    assert job.attempts == 1, "the lost message never started the job"
    assert int(rclient.get(STATS_REAPED) or 0) == 1


def test_redis_killed_right_after_a_pop_loses_no_job(
    api, start_worker, store, celery_app, rclient, redis_server: RedisServer, settings
):
    frozen, job_id = freeze_with_a_served_brpop(start_worker, store, celery_app, rclient)
    # The pop is in the append-only file; Redis dies before the registration. The reply
    # sits unread in the frozen worker's socket: as if Redis had died before sending it
    # (its append-only file is written before replies go out), the worker never gets it.
    redis_server.kill()
    redis_server.start()
    os.killpg(frozen.pid, signal.SIGKILL)
    frozen.wait(timeout=10)
    assert store.require(job_id).state == "queued"
    assert popped_nowhere(rclient), "the restarted Redis must hold the message nowhere"
    start_worker()
    job = wait_state(
        store,
        job_id,
        "succeeded",
        "failed",
        "dead",
        timeout=reaper_bound(settings) + settings.visibility_timeout,
    )
    assert job.state == "succeeded", job


def test_registration_refused_by_maxmemory_loses_no_job(
    api, start_worker, store, celery_app, rclient, settings
):
    worker = start_worker()
    wait_for(lambda: blocked_in_brpop(rclient), timeout=10, what="the worker's BRPOP")
    os.kill(worker.pid, signal.SIGSTOP)
    # Its pending BRPOP times out within a second; a frozen worker sends no other.
    wait_for(lambda: not blocked_in_brpop(rclient), timeout=5, what="the BRPOP to time out")
    job_id = submit(store, celery_app, "debug.sleep", {"seconds": 0.5}, "default")[0].id
    # Full: a pop frees memory and is served, the registration's HSET is refused (OOM).
    used = int(rclient.info("memory")["used_memory"])
    rclient.config_set("maxmemory-policy", "noeviction")
    rclient.config_set("maxmemory", str(max(1, used - 100_000)))
    try:
        os.kill(worker.pid, signal.SIGCONT)
        wait_for(lambda: popped_nowhere(rclient), timeout=30, what="the pop under maxmemory")
        time.sleep(2)
        assert store.require(job_id).state == "queued", worker.output[-3000:]
        assert popped_nowhere(rclient), worker.output[-3000:]
    finally:
        rclient.config_set("maxmemory", "0")  # memory freed (a worker recorded its outcomes)
    # Celery gives up on a consumer error it cannot recover from and the worker exits;
    # its Deployment starts another (as here).
    worker.wait(timeout=30)
    start_worker()
    job = wait_state(store, job_id, "succeeded", "failed", "dead", timeout=reaper_bound(settings))
    assert job.state == "succeeded", worker.output[-3000:]


def test_reaper_leaves_jobs_whose_message_exists(store, celery_app, rclient):
    """Jobs waiting in a list, taken by a worker, or scheduled are never queued twice."""
    reaper = Reaper(store, celery_app)
    waiting = submit(store, celery_app, "debug.noop", {}, "low")[0].id
    delayed = submit(store, celery_app, "debug.noop", {}, "default", countdown=60)[0].id
    taken = submit(store, celery_app, "debug.noop", {}, "critical")[0].id
    # Taken as kombu takes it: moved from the list into the unacked hash.
    raw = rclient.rpop("critical")
    rclient.hset("unacked", "tag-1", b"[" + raw + b', "", "critical"]')
    for _ in range(4):
        assert reaper.run_once() == []
    assert rclient.llen("low") == 1
    assert rclient.llen("critical") == 0
    assert {store.require(i).state for i in (waiting, delayed, taken)} == {"queued"}

    # Popped by hand: nowhere. Queued again on the pass that sees it lost twice, once.
    rclient.rpop("low")
    passes = [reaper.run_once() for _ in range(4)]
    assert [waiting] in passes, passes
    assert sum(len(p) for p in passes) == 1
    assert rclient.llen("low") == 1
    # A redelivered message (kombu restores it with "redelivered" set) still counts.
    restored = rclient.lindex("low", 0)
    assert f'"id": "{waiting}"'.encode() in restored


def test_retry_lost_in_transit_after_its_promotion_is_queued_again(store, celery_app, rclient):
    """Found by the chaos soak: the promoter pushes a due retry (the job leaves the
    schedule but stays "retrying" until a worker starts it); a pop that never reaches
    unacked lost it for good while the reaper looked only at queued and running jobs."""
    job_id = submit(store, celery_app, "debug.noop", {}, "default")[0].id
    rclient.rpop("default")  # taken by a worker, which starts it...
    store.begin(job_id)
    store.retrying(job_id, {"code": "transient_error", "message": "boom"}, due=time.time() - 1)
    assert promote_due(store, celery_app) == 1  # ...the retry is due and published...
    rclient.rpop("default")  # ...and its pop is lost (Redis restarted before unacked)
    assert store.require(job_id).state == "retrying"
    reaper = Reaper(store, celery_app)
    passes = [reaper.run_once() for _ in range(4)]
    assert [job_id] in passes, passes
    assert store.require(job_id).state == "queued"
    assert f'"id": "{job_id}"'.encode() in rclient.lindex("default", 0)


def test_jobs_cancelled_by_redis_outages_are_not_dead_lettered(
    start_worker, store, celery_app, redis_server: RedisServer, settings
):
    """Celery cancels the running job on each broker connection loss; five Redis restarts
    in a row are five starts that did not finish, none of which a dying worker caused."""
    worker = start_worker()
    job_id = submit(store, celery_app, "debug.sleep", {"seconds": 3}, "default")[0].id
    outages = MAX_DELIVERIES + 1
    for outage in range(1, outages + 1):
        wait_for(
            lambda n=outage: (
                (j := store.get(job_id)) is not None and j.state == "running" and j.attempts == n
            ),
            timeout=settings.visibility_timeout + 30,
            what=f"start {outage} of the job",
        )
        redis_server.stop()
        time.sleep(0.5)
        redis_server.start()
    job = wait_state(
        store, job_id, "succeeded", "failed", "dead", timeout=settings.visibility_timeout + 30
    )
    assert job.state == "succeeded", (job, worker.output[-3000:])
    assert job.attempts == outages + 1


def test_restore_lock_left_behind_delays_redelivery_by_one_interval_at_most(
    start_worker, store, celery_app, rclient, redis_server: RedisServer, settings
):
    """The lock kombu takes around each restore scan, as a worker killed mid-scan (or a
    Redis restart) leaves it: it must expire within one restore interval, not 300 s."""
    first = start_worker()
    ttls: list[int] = []
    watcher = redis.Redis.from_url(redis_server.url, socket_timeout=20)
    with watcher.monitor() as monitor:
        for command in monitor.listen():
            words = str(command["command"]).split()
            if words[:2] == ["SET", "unacked_mutex"] and "PX" in words:
                ttls.append(int(words[words.index("PX") + 1]))
                break
    [ttl_ms] = ttls
    assert ttl_ms <= settings.restore_interval * 1000

    job_id = submit(store, celery_app, "debug.sleep", {"seconds": 2}, "default")[0].id
    wait_state(store, job_id, "running")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    [(_, delivered_at)] = rclient.zrange("unacked_index", 0, -1, withscores=True)
    rclient.set("unacked_mutex", "left-by-a-killed-worker", px=ttl_ms)

    start_worker()
    wait_for(
        lambda: store.require(job_id).attempts == 2,
        timeout=settings.visibility_timeout + 60,
        interval=0.02,
        what="the second start of the job",
    )
    delay = time.time() - delivered_at
    bound = settings.visibility_timeout + 2 * settings.restore_interval + ttl_ms / 1000 + 5
    assert delay <= bound, f"redelivered after {delay:.1f} s, promised {bound:.1f} s"
    assert wait_state(store, job_id, "succeeded", timeout=30).state == "succeeded"
