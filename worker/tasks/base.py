"""What every bgworker task does around its body: the job record's life cycle.

A task may run more than once for one job (late acks redeliver after a crash or a
shutdown deadline), so :meth:`JobTask.__call__` first moves the record to ``running``
and skips the body when the job has already finished or was cancelled; and each body is
idempotent (it overwrites its outputs atomically).

Retries do not go through Celery's countdown, which would keep the message in a worker's
memory: the record goes to ``retrying`` and into the scheduled set, this message is
acknowledged, and the API's promoter publishes a new one when the backoff has passed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, cast

from celery import Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from worker.celery_app import BgworkerCelery
from worker.enqueue import BROKER_ERRORS
from worker.errors import BgworkerError, InputError, PermanentError, TransientError
from worker.interruptions import PendingUncounts
from worker.jobs import Job, JobStore, error_info

log = logging.getLogger(__name__)

# Errors worth another attempt with backoff; everything else fails the job at once.
TRANSIENT: tuple[type[Exception], ...] = (TransientError, SoftTimeLimitExceeded, OSError)

# Starts of one message a job may take without finishing (the worker process died each
# time: out of memory, SIGKILL) before it is declared dead instead of crashing workers
# forever. Retries and replays reset the count.
MAX_DELIVERIES = 4

# What Celery's Request.cancel reports through on_retry when it kills a job's pool
# process because the broker connection dropped (celery/worker/request.py).
CANCELLED_BY_CELERY = "cancelled by Celery"


class JobCancelled(Exception):
    """Raised inside a body when the record says the job was cancelled meanwhile."""


class JobTask(Task[Any, Any]):
    """Base class: record transitions, retries with backoff, dead-lettering."""

    acks_late = True
    reject_on_worker_lost = True
    # Expected failures (a user's bad file): Celery logs them at INFO in one line, without
    # the traceback it logs at ERROR for anything else; _run_job logs the WARNING.
    throws = (InputError, PermanentError)

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

    @property
    def interrupted(self) -> PendingUncounts:
        """The worker main process's pending uncounts (one per app, made on first use)."""
        app = self.bg
        pending: PendingUncounts | None = getattr(app, "_bgworker_uncounts", None)
        if pending is None:
            pending = PendingUncounts(lambda: app.store, app.settings.visibility_timeout)
            app._bgworker_uncounts = pending  # type: ignore[attr-defined]
        return pending

    def release_inputs(self, job_id: str) -> None:
        """Delete what only this job's runs read (an upload), once no run can come again.

        Called after the outcome is recorded as final: ``succeeded``, ``failed`` or
        ``cancelled`` (or the record has expired). Never for a retry, nor for ``dead``,
        which may be replayed; the storage janitor removes those after the record expires.
        """

    def _release(self, job_id: str) -> None:
        try:
            self.release_inputs(job_id)
        except OSError as exc:  # the janitor removes it later
            log.warning("job %s: cannot delete its inputs: %s", job_id, exc)

    def progress(self, percent: float) -> None:
        """Report progress; stop the body if the job was cancelled meanwhile."""
        state = self.store.set_progress(self.job_id, int(percent))
        if state == "cancelled":
            raise JobCancelled(self.job_id)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._run_job(args, kwargs)
        except BROKER_ERRORS as exc:
            # Redis failed under us, so the outcome cannot be recorded: put the message
            # back (or, if Redis is down altogether, leave it unacknowledged for the
            # visibility timeout). The job runs again; its task is idempotent.
            log.warning("job %s: Redis failed (%s); returning its message", self.job_id, exc)
            with contextlib.suppress(Exception):
                # A Redis hiccup is not a dying worker: do not count it as a delivery.
                self.store.uncount_delivery(self.job_id)
            raise Reject(str(exc), requeue=True) from exc

    def _run_job(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        job_id = self.job_id
        job, previous = self.store.begin(job_id)
        if job is None:
            # Finished, cancelled, or expired: a redelivered or stale message. Ack it.
            log.info("job %s is %s; dropping its message", job_id, previous or "gone")
            if previous != "dead":  # a dead job may be replayed: it keeps its inputs
                self._release(job_id)
            raise Ignore()
        if job.deliveries > MAX_DELIVERIES:
            message = (
                f"job was started {job.deliveries} times without finishing; the worker "
                "process died each time (out of memory?)"
            )
            self.store.fail(job_id, error_info("worker_lost", message), dead=True)
            raise Ignore()
        t0 = time.perf_counter()
        try:
            result = super().__call__(*args, **kwargs)
        except JobCancelled:
            log.info("job %s was cancelled while running", job_id)
            self._release(job_id)
            raise Ignore() from None
        except (InputError, PermanentError) as exc:  # a corrupt image; retrying cannot help
            if self.store.fail(job_id, error_info(exc.code, exc.message), dead=False):
                self._release(job_id)
            log.warning("job %s failed (%s): %s", job_id, exc.code, exc.message)
            raise
        except TRANSIENT as exc:
            self._retry_or_bury(job, exc)
            raise
        except BROKER_ERRORS:
            raise
        except Exception as exc:
            if self.store.fail(job_id, error_info("task_error", _describe(exc)), dead=False):
                self._release(job_id)
            raise
        # Only if this run's outcome was recorded: a record that moved on (a second body
        # of the job after a crash window) may still need the inputs.
        if self.store.succeed(job_id, result, time.perf_counter() - t0):
            self._release(job_id)
        return result

    def _retry_or_bury(self, job: Job, exc: Exception) -> None:
        settings = self.bg.settings
        error = error_info(getattr(exc, "code", "transient_error"), _describe(exc))
        if job.retries >= settings.max_retries:
            error["message"] += f" (gave up after {settings.max_retries} retries)"
            self.store.fail(job.id, error, dead=True)
            return None
        countdown = get_exponential_backoff_interval(
            factor=1,
            retries=job.retries,
            maximum=settings.retry_backoff_max,
            full_jitter=True,
        )
        # One atomic step records the error and schedules the retry; only then is this
        # message acknowledged (Ignore). Dying in between redelivers it: harmless.
        self.store.retrying(job.id, error, due=time.time() + countdown)
        log.warning(
            "job %s attempt %d failed: %s; retry %d of %d in %d s",
            job.id,
            job.attempts,
            error["message"],
            job.retries + 1,
            settings.max_retries,
            countdown,
        )
        raise Ignore()

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # bgworker's own retries never go through Celery's, so a Retry here is Celery
        # cancelling the job on a broker connection loss (in the main process): its pool
        # process was killed, but no worker died. Not a delivery for the guard.
        if isinstance(exc, Retry) and CANCELLED_BY_CELERY in str(exc.message or exc):
            log.warning("job %s cancelled: the broker connection was lost; it runs again", task_id)
            self.interrupted.add(task_id)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        # Runs in the worker's main process when the hard time limit killed the pool
        # child, which had no chance to record anything itself.
        if isinstance(exc, TimeLimitExceeded):
            error = error_info("time_limit", f"killed after the hard time limit of {exc.args[0]} s")
            if self.store.fail(task_id, error, dead=False):
                self._release(task_id)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BgworkerError):
        return exc.message
    if isinstance(exc, SoftTimeLimitExceeded):
        return "soft time limit exceeded"
    return f"{type(exc).__name__}: {exc}"
