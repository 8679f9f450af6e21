"""Tasks for operators and tests, registered only with ``BGWORKER_DEBUG_TASKS=1``.

``debug.sleep`` holds a worker busy (shutdown drills, autoscaling checks), ``debug.flaky``
fails on purpose (retries, dead letters), ``debug.noop`` measures per-job overhead.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from worker.catalog import DEBUG_FLAKY, DEBUG_NOOP, DEBUG_SLEEP
from worker.errors import PermanentError, TransientError
from worker.tasks.base import JobTask


@shared_task(bind=True, base=JobTask, name=DEBUG_SLEEP)
def sleep(self: JobTask, seconds: float = 1, ignore_soft_limit: bool = False) -> dict[str, Any]:
    """Sleep ``seconds``, reporting progress every second.

    ``ignore_soft_limit`` plays a task stuck where the soft time limit cannot reach it,
    so that the hard limit has to kill it.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(min(1.0, left))
        except SoftTimeLimitExceeded:
            if not ignore_soft_limit:
                raise
        self.progress(100 * (1 - max(0.0, deadline - time.monotonic()) / seconds))
    return {"slept": seconds, "pid": os.getpid()}


@shared_task(bind=True, base=JobTask, name=DEBUG_FLAKY)
def flaky(self: JobTask, fail_times: int = 1, permanent: bool = False) -> dict[str, Any]:
    """Fail while the job has been attempted at most ``fail_times`` times, then succeed."""
    job = self.store.require(self.job_id)
    if job.attempts <= fail_times:
        if permanent:
            raise PermanentError(f"failing on purpose (attempt {job.attempts} of {fail_times})")
        raise TransientError(f"failing on purpose (attempt {job.attempts} of {fail_times})")
    return {"attempts": job.attempts}


@shared_task(bind=True, base=JobTask, name=DEBUG_NOOP)
def noop(self: JobTask) -> None:
    return None
