"""What every bgworker task does around its body: the job record's life cycle.

A task may run more than once for one job (late acks redeliver after a crash or a
shutdown deadline), so :meth:`JobTask.__call__` first moves the record to ``running``
and skips the body when the job has already finished or was cancelled; and each body is
idempotent (it overwrites its outputs atomically).
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import redis
from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from worker.celery_app import BgworkerCelery
from worker.errors import BgworkerError, InputError, PermanentError, TransientError
from worker.jobs import JobStore, error_info

log = logging.getLogger(__name__)

# Errors worth another attempt with backoff; everything else fails the job at once.
TRANSIENT: tuple[type[Exception], ...] = (
    TransientError,
    SoftTimeLimitExceeded,
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
)


class JobCancelled(Exception):
    """Raised inside a body when the record says the job was cancelled meanwhile."""


class JobTask(Task[Any, Any]):
    """Base class: record transitions, retries with backoff, dead-lettering."""

    acks_late = True
    reject_on_worker_lost = True

    @property
    def bg(self) -> BgworkerCelery:
        return cast(BgworkerCelery, self.app)

    @property
    def job_id(self) -> str:
        """The job id is the Celery task id (set by :func:`worker.enqueue.publish`)."""
        task_id = self.request.id
        assert task_id is not None, "a task body runs only with a request"
        return task_id

    @property
    def store(self) -> JobStore:
        return self.bg.store

    def progress(self, percent: float) -> None:
        """Report progress; stop the body if the job was cancelled meanwhile."""
        state = self.store.set_progress(self.job_id, int(percent))
        if state == "cancelled":
            raise JobCancelled(self.request.id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job_id = self.job_id
        settings = self.bg.settings
        started, previous = self.store.begin(job_id)
        if not started:
            # Finished, cancelled, or expired: a redelivered or stale message. Ack it.
            log.info("job %s is %s; skipping its message", job_id, previous or "unknown")
            return None
        job = self.store.get(job_id)
        if job is not None and job.attempts > settings.max_retries + 1 + _REDELIVERY_ALLOWANCE:
            # Delivered again and again without ever finishing: the worker died each time
            # (OOM, SIGKILL). Stop the loop instead of crashing workers forever.
            self.store.fail(
                job_id,
                self.name,
                error_info(
                    "worker_lost",
                    f"job was started {job.attempts} times and never "
                    "finished; the worker process died each time (out of memory?)",
                ),
                dead=True,
            )
            return None
        t0 = time.perf_counter()
        try:
            result = super().__call__(*args, **kwargs)
        except JobCancelled:
            log.info("job %s was cancelled while running", job_id)
            return None
        except Retry:
            raise
        except InputError as exc:
            self.store.fail(job_id, self.name, error_info(exc.code, exc.message), dead=False)
            raise PermanentError(exc.message) from exc
        except PermanentError as exc:
            self.store.fail(job_id, self.name, error_info(exc.code, exc.message), dead=False)
            raise
        except TRANSIENT as exc:
            self._retry_or_bury(job_id, exc)
            raise
        except Exception as exc:
            self.store.fail(job_id, self.name, error_info("task_error", _describe(exc)), dead=False)
            raise
        self.store.succeed(job_id, result, self.name, time.perf_counter() - t0)
        return result

    def _retry_or_bury(self, job_id: str, exc: Exception) -> None:
        settings = self.bg.settings
        error = error_info(getattr(exc, "code", "transient_error"), _describe(exc))
        if self.request.retries >= settings.max_retries:
            error["message"] += f" (gave up after {settings.max_retries} retries)"
            self.store.fail(job_id, self.name, error, dead=True)
            return
        countdown = get_exponential_backoff_interval(
            factor=1,
            retries=self.request.retries,
            maximum=settings.retry_backoff_max,
            full_jitter=True,
        )
        self.store.retrying(job_id, error)
        # Celery publishes the retry message before this one is acked: nothing is lost
        # if the process dies in between (at worst the job runs twice, harmlessly).
        raise self.retry(exc=exc, countdown=countdown, max_retries=settings.max_retries)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # Runs in the worker's main process when the hard time limit killed the pool
        # child, which had no chance to record anything itself.
        if isinstance(exc, TimeLimitExceeded):
            self.store.fail(
                task_id,
                self.name,
                error_info("time_limit", f"killed after the hard time limit of {exc.args[0]} s"),
                dead=False,
            )


# Redeliveries (not retries) a job may take before it is declared dead.
_REDELIVERY_ALLOWANCE = 3


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BgworkerError):
        return exc.message
    if isinstance(exc, SoftTimeLimitExceeded):
        return "soft time limit exceeded"
    return f"{type(exc).__name__}: {exc}"
