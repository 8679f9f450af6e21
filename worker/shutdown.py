"""Graceful shutdown with a deadline: finish the job in hand, or put it back.

Celery alone offers two halves that do not fit together: SIGTERM starts a warm
shutdown that waits for running jobs with no deadline, and the soft shutdown
(``worker_soft_shutdown_timeout``, reached by SIGQUIT) sleeps its whole timeout even when
the job finishes early. We keep Celery's warm shutdown (the worker exits the moment its
jobs are done) and arm a timer when it starts; if the timer fires first, it sends the
worker SIGQUIT, and Celery's cold shutdown cancels the running jobs and restores their
unacknowledged messages to their queues ("Restoring N unacknowledged message(s)"), where
another worker takes them. A job lost at that point is impossible by construction: its
message has been in Redis (kombu's ``unacked`` hash) all along. Once a message has left
that hash, its record goes back from ``running`` to ``queued`` (what the API and the
event stream then show), unless the job has moved on meanwhile.

Pool children are moved to process groups of their own, so a SIGTERM sent to the whole
group (a terminal, an init that signals the group, ``kill -- -PGID``) reaches only the
main process, which decides; the children keep working on their jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_shutting_down
from celery.worker import state

from worker import liveness
from worker.jobs import JobStore
from worker.queues import UNACKED_HASH

log = logging.getLogger(__name__)


# How long the main process watches requeued messages leave kombu's unacked hash, to put
# their records back to ``queued``. It delays the exit by at most this much, well within
# the grace period's margin over the shutdown timeout.
REQUEUE_WATCH_SECONDS = 5.0


def install(
    shutdown_timeout: float,
    heartbeat_file: Path | None = None,
    store: Callable[[], JobStore] | None = None,
) -> None:
    """Connect the deadline and the child isolation to Celery's signals (once per process).

    ``store`` gives the main process's job store (called only at the deadline, long after
    the pool has forked) so that interrupted jobs' records go back to ``queued``; without
    it they show ``running`` until a worker starts them again.
    """

    def arm_deadline(sig: str, how: str, exitcode: int, **_: Any) -> None:
        if how != "Warm":
            return
        if heartbeat_file is not None:
            liveness.mark_draining(heartbeat_file)
        log.warning(
            "%s received: finishing the job in hand, at most %s s before it is requeued",
            sig,
            shutdown_timeout,
        )
        timer = threading.Timer(shutdown_timeout, _deadline_passed, args=(shutdown_timeout, store))
        timer.daemon = True
        timer.start()

    def own_process_group(**_: Any) -> None:
        os.setpgid(0, 0)

    worker_shutting_down.connect(arm_deadline, weak=False)
    worker_process_init.connect(own_process_group, weak=False)


def _deadline_passed(timeout: float, get_store: Callable[[], JobStore] | None) -> None:
    requests = list(state.active_requests)
    if not requests:
        # The jobs are done and Celery is only closing its connections: let it finish.
        return
    log.warning(
        "shutdown deadline of %s s passed with a job still running: "
        "cancelling it and returning its message to the queue",
        timeout,
    )
    store = get_store() if get_store is not None else None
    runs = _running_starts(store, requests) if store is not None else {}
    os.kill(os.getpid(), signal.SIGQUIT)
    if runs and store is not None:
        # Not a daemon: the interpreter waits for it (at most REQUEUE_WATCH_SECONDS)
        # before the process exits, so the records are put right before the pod goes.
        threading.Thread(target=_mark_requeued, args=(store, runs), daemon=False).start()


def _running_starts(store: JobStore, requests: list[Any]) -> dict[str, tuple[str, int]]:
    """Job id -> (delivery tag, attempts) of each interrupted job whose record is running."""
    runs: dict[str, tuple[str, int]] = {}
    try:
        for request in requests:
            job = store.get(request.id)
            if job is not None and job.state == "running":
                runs[job.id] = (str(request.message.delivery_tag), job.attempts)
    except Exception as exc:  # the records are cosmetic here; the requeue must go on
        log.warning("cannot read the interrupted jobs' records (%s)", exc)
    return runs


def _mark_requeued(store: JobStore, runs: dict[str, tuple[str, int]]) -> None:
    """Put each record back to ``queued`` once its message has left kombu's unacked hash.

    Only then is the message on its queue (or acknowledged, if the job ended just before
    the cancel), and the compare on ``attempts`` leaves a job alone that another worker
    has already started again or that has finished: the record never claims ``queued``
    for a job without a message on a queue.
    """
    pending = dict(runs)
    deadline = time.monotonic() + REQUEUE_WATCH_SECONDS
    try:
        while pending and time.monotonic() < deadline:
            for job_id, (tag, attempts) in list(pending.items()):
                if not store.client.hexists(UNACKED_HASH, tag):
                    store.requeued(job_id, attempts)
                    del pending[job_id]
            time.sleep(0.05)
    except Exception as exc:
        log.warning("cannot put interrupted jobs back to queued (%s)", exc)
    if pending:
        log.warning("jobs %s still show running until a worker starts them again", sorted(pending))
