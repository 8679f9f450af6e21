"""Starts that ended without their worker dying, taken back from the delivery count.

The poison-message guard (:data:`worker.tasks.base.MAX_DELIVERIES`) dead-letters a job
whose starts keep ending with the worker process dead. When the broker connection drops,
Celery cancels the jobs in hand (``worker_cancel_long_running_tasks_on_connection_loss``:
kombu will hand their messages to another worker) by killing their pool processes, which
looks just like a worker dying. Celery tells the task (``on_retry``, in the worker's main
process) but Redis is down at that moment, so the count is taken back here once it
answers again. A worker that dies before Redis returns leaves the start counted: the
guard errs towards counting, never towards running a poison message for ever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from worker.enqueue import BROKER_ERRORS
from worker.jobs import JobStore

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class PendingUncounts:
    """Job ids whose last start is to be uncounted, retried until Redis answers."""

    def __init__(self, store: Callable[[], JobStore], give_up_after: float) -> None:
        self._store = store
        self._give_up_after = give_up_after
        self._pending: dict[str, float] = {}  # job id -> give up at (monotonic)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job_id: str) -> None:
        with self._lock:
            self._pending[job_id] = time.monotonic() + self._give_up_after
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="bgworker-uncount", daemon=True
                )
                self._thread.start()

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                expired = [i for i, until in self._pending.items() if until < now]
                for job_id in expired:
                    del self._pending[job_id]
                todo = list(self._pending)
                if not todo:
                    self._thread = None
                    return
            if expired:
                log.warning("jobs %s: gave up taking back their interrupted start", expired)
            for job_id in todo:
                try:
                    self._store().uncount_delivery(job_id)
                except BROKER_ERRORS:
                    break  # Redis still away: try them all again later
                with self._lock:
                    self._pending.pop(job_id, None)
                log.info(
                    "job %s: its start cut short by the broker connection loss is not "
                    "counted as a worker death",
                    job_id,
                )
            time.sleep(RETRY_SECONDS)
