"""The soak's checks catch what they claim to: losses, duplicates, burials, wrong outcomes.

Each fault is planted by hand in a real Redis behind a real API (no workers, no fault
loop), so the test says the checks would see it, whatever the soak's luck with timing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos import aof, checks, redis_state
from tests.chaos.config import process_env
from tests.chaos.faults import Action
from tests.chaos.processes import System
from tests.chaos.workload import JobSpec, Submission
from worker.jobs import events_key, job_key

pytestmark = pytest.mark.chaos


@pytest.fixture
def system() -> Iterator[System]:
    root = Path(tempfile.mkdtemp(prefix="bgworker-chaos-checks-"))
    system = System(root, process_env(root / "state"), workers=0, concurrency=1)
    try:
        system.start(60)
        yield system
    finally:
        system.close()
        shutil.rmtree(root, ignore_errors=True)


def _submit(system: System, index: int, queue: str, expected: str = "succeeded") -> Submission:
    spec = JobSpec(
        index=index,
        key=f"checks-{index}",
        label="sleep",
        task="debug.sleep",
        args={"seconds": 0.1},
        priority=queue,
        delay=0.0,
        expected=expected,
        at=0.0,
        resubmit=False,
    )
    sub = Submission(spec)
    resp = httpx.post(
        f"http://127.0.0.1:{system.api_port}/v1/jobs",
        json=spec.body(),
        headers={"Idempotency-Key": spec.key},
    )
    assert resp.status_code == 202, resp.text
    sub.ids.append(resp.json()["id"])
    return sub


def _end(system: System, job_id: str, state: str, times: int = 1) -> None:
    """Write a terminal record and ``times`` terminal events, as a worker's script would."""
    client = system.redis_client()
    error = json.dumps({"code": "worker_lost", "message": "planted"}) if state == "dead" else ""
    client.hset(job_key(job_id), mapping={"state": state, "error": error})
    record = client.hgetall(job_key(job_id))
    for _ in range(times):
        client.xadd(events_key(job_id), record)  # type: ignore[arg-type]
    client.close()


def test_each_planted_fault_is_found_with_its_evidence(system: System) -> None:
    t0 = time.time()
    taken = _submit(system, 0, "low")  # its message is popped and never registered
    waiting = _submit(system, 1, "default")  # never run: still in its queue
    buried = _submit(system, 2, "critical")
    twice = _submit(system, 3, "critical")
    fine = _submit(system, 4, "critical")
    wrong = _submit(system, 5, "critical", expected="failed")
    client = system.redis_client()
    client.rpop("low")  # what a worker's BRPOP does, with no HSET unacked after it
    client.close()
    assert buried.job_id and twice.job_id and fine.job_id and wrong.job_id
    _end(system, buried.job_id, "dead")
    _end(system, twice.job_id, "succeeded", times=2)
    _end(system, fine.job_id, "succeeded")
    _end(system, wrong.job_id, "succeeded")
    subs = [taken, waiting, buried, twice, fine, wrong]
    client = system.redis_client()
    state = redis_state.read(client, [s.spec.key for s in subs])
    client.close()
    commands, caveat = aof.read_commands(system.redis.data_dir)
    assert caveat == ""
    evidence = checks.Evidence(t0, [], {}, {}, commands, caveat)

    verdict = checks.check(subs, f"http://127.0.0.1:{system.api_port}", state, evidence)

    found = {(f.key, f.category): f for f in verdict.findings}
    assert set(found) == {
        ("checks-0", "lost"),
        ("checks-1", "lost"),
        ("checks-2", "wrongly-dead"),
        ("checks-3", "duplicated"),
        ("checks-5", "wrong-outcome"),
    }, [f.text() for f in verdict.findings]
    popped = "\n".join(found["checks-0", "lost"].evidence)
    assert "NOWHERE" in popped
    assert "RPOP low: a worker took its message" in popped
    assert "HSET unacked" not in popped, "the trace invented a registration"
    assert "in queue default" in "\n".join(found["checks-1", "lost"].evidence)
    assert "worker_lost" in found["checks-2", "wrongly-dead"].summary
    assert "2 terminal events" in found["checks-3", "duplicated"].summary
    assert not verdict.passed


def test_a_key_answered_with_two_jobs_is_a_duplicate(system: System) -> None:
    sub = _submit(system, 0, "default")
    sub.ids.append("0" * 32)  # as if a retry with the same key had created another job
    client = system.redis_client()
    state = redis_state.read(client, [sub.spec.key])
    client.close()
    evidence = checks.Evidence(time.time(), [], {}, {}, [], "")
    verdict = checks.check([sub], f"http://127.0.0.1:{system.api_port}", state, evidence)
    assert [f.category for f in verdict.findings] == ["duplicated", "lost"]


def test_a_redelivery_is_put_down_to_the_fault_that_could_have_cut_its_run_short() -> None:
    def act(kind: str, at: float, target: str) -> Action:
        return Action(kind, at, target, "", at)

    runs = [
        checks.Run(100.0, 1, "first", "w1"),
        checks.Run(120.0, 2, "redelivery", "w2"),
        checks.Run(140.0, 3, "redelivery", "w3"),
    ]
    actions = [
        act("child-kill", 100.5, "w1"),  # maybe its other child
        act("worker-kill", 101.0, "w1"),  # certainly its own
        act("worker-kill", 121.0, "w1"),  # another worker than the second run's
        act("redis-kill", 130.0, "redis"),  # after the 2 s job + margin: too late
    ]
    found, unexplained = checks._attribute(runs, actions, duration=2.0)
    assert found == [("worker-kill", 19.0)]
    assert unexplained == 1
    assert runs[0].ended_by is actions[1]
