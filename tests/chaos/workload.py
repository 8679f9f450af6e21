"""The soak's jobs, each with its true outcome known before it is submitted, and the
client that submits them over real HTTP the way a careful client would: with an
``Idempotency-Key``, retried with the same key on connection errors and 5xx.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.queues import QUEUES
from worker.settings import Settings

SHORT_SLEEP = (0.2, 2.5)
# Longer than the soak's shutdown timeout (3 s): a SIGTERM's deadline requeues them.
LONG_SLEEP = (4.0, 6.0)
LONGEST_SLEEP = LONG_SLEEP[1]
LONGEST_DELAY = 3.0
# Fails on every attempt: transiently (retried until max_retries, then dead) or
# permanently (failed at once).
ALWAYS = 1000

# label: (weight, expected outcome)
MIX: dict[str, tuple[int, str]] = {
    "sleep": (40, "succeeded"),
    "long": (5, "succeeded"),
    "noop": (15, "succeeded"),
    "delayed": (10, "succeeded"),  # through the scheduled set and the API's promoter
    "flaky-retry": (15, "succeeded"),  # fails 1..max_retries times, then succeeds
    "flaky-dead": (8, "dead"),  # out of retries: the dead-letter set
    "permanent": (7, "failed"),
}


@dataclass(frozen=True)
class JobSpec:
    """One job of the plan: what to submit, when (seconds into the faults), and its fate."""

    index: int
    key: str
    label: str
    task: str
    args: dict[str, Any]
    priority: str
    delay: float
    expected: str
    at: float
    resubmit: bool  # POST the same key again once accepted: must return the same job

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"task": self.task, "args": self.args, "priority": self.priority}
        if self.delay:
            body["delay_seconds"] = self.delay
        return body

    def work_seconds(self, settings: Settings) -> float:
        """Pool-process time this job takes when nothing fails, retries' runs included."""
        runs = 1 + (self.args.get("fail_times", 0) if self.label == "flaky-retry" else 0)
        if self.label == "flaky-dead":
            runs = 1 + settings.max_retries
        return runs * (float(self.args.get("seconds", 0.0)) + 0.05)


def plan(seed: int, count: int, seconds: float, settings: Settings) -> list[JobSpec]:
    """``count`` jobs spread evenly over the fault phase, drawn from ``MIX`` by ``seed``."""
    rng = random.Random(f"{seed}:jobs")
    labels = list(MIX)
    weights = [MIX[label][0] for label in labels]
    specs = []
    for i in range(count):
        label = rng.choices(labels, weights)[0]
        seconds = round(rng.uniform(*(LONG_SLEEP if label == "long" else SHORT_SLEEP)), 2)
        task, args, delay = "debug.sleep", {"seconds": seconds}, 0.0
        if label == "noop":
            task, args = "debug.noop", {}
        elif label == "delayed":
            delay = float(rng.randint(1, int(LONGEST_DELAY)))
        elif label == "flaky-retry":
            task, args = "debug.flaky", {"fail_times": rng.randint(1, settings.max_retries)}
        elif label == "flaky-dead":
            task, args = "debug.flaky", {"fail_times": ALWAYS}
        elif label == "permanent":
            task, args = "debug.flaky", {"fail_times": ALWAYS, "permanent": True}
        specs.append(
            JobSpec(
                index=i,
                key=f"chaos-{seed}-{i:05d}",
                label=label,
                task=task,
                args=args,
                priority=rng.choice(QUEUES),
                delay=delay,
                expected=MIX[label][1],
                at=seconds * i / count,
                resubmit=rng.random() < 0.1,
            )
        )
    return specs


@dataclass
class Submission:
    """What the client saw for one job."""

    spec: JobSpec
    ids: list[str] = field(default_factory=list)  # every id answered for the key
    tries: int = 0
    accepted_at: float | None = None
    errors: list[str] = field(default_factory=list)  # the last transient errors
    refused: str | None = None  # a 4xx: the harness asked for something wrong

    @property
    def job_id(self) -> str | None:
        return self.ids[0] if self.ids else None


class Submitter:
    """Submits the plan on its schedule from a few threads, so that one job retrying
    against a dead API or Redis does not hold up the others."""

    def __init__(
        self,
        url: Callable[[], str],
        specs: list[JobSpec],
        threads: int = 4,
        retry_pause: float = 0.25,
    ) -> None:
        self._url = url
        self.submissions = {spec.key: Submission(spec) for spec in specs}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="chaos-submit")
        self._local = threading.local()
        self._retry_pause = retry_pause
        self._stop = threading.Event()
        self._deadline = float("inf")

    def start(self, t0: float) -> None:
        for submission in self.submissions.values():
            self._pool.submit(self._submit, submission, t0)

    def finish(self, deadline: float) -> list[Submission]:
        """Give pending submissions until ``deadline`` (wall time); returns those that never
        got an answer."""
        self._deadline = deadline
        self._pool.shutdown(wait=True)
        return [s for s in self.submissions.values() if s.job_id is None]

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0))
            self._local.client = client
        return client

    def _submit(self, submission: Submission, t0: float) -> None:
        spec = submission.spec
        wait = t0 + spec.at - time.time()
        if wait > 0 and self._stop.wait(wait):
            return
        self._post(submission)
        if spec.resubmit and submission.job_id is not None:
            self._post(submission)

    def _post(self, submission: Submission) -> None:
        spec = submission.spec
        while not self._stop.is_set() and time.time() < self._deadline:
            submission.tries += 1
            try:
                resp = self._client().post(
                    self._url() + "/v1/jobs",
                    json=spec.body(),
                    headers={"Idempotency-Key": spec.key},
                )
            except httpx.TransportError as exc:
                self._note(submission, f"{type(exc).__name__}: {exc}")
            else:
                if resp.status_code == 202:
                    submission.ids.append(resp.json()["id"])
                    submission.accepted_at = submission.accepted_at or time.time()
                    return
                if resp.status_code < 500:
                    submission.refused = f"{resp.status_code} {resp.text[:300]}"
                    return
                self._note(submission, f"{resp.status_code} {resp.text[:120]}")
            self._stop.wait(self._retry_pause)

    @staticmethod
    def _note(submission: Submission, error: str) -> None:
        submission.errors = [*submission.errors[-4:], error]
