"""Graceful shutdown with a deadline: finish the job in hand, or put it back.

Celery alone offers two halves that do not fit together: SIGTERM starts a warm
shutdown that waits for running jobs with no deadline, and the soft shutdown
(``worker_soft_shutdown_timeout``, reached by SIGQUIT) sleeps its whole timeout even when
the job finishes early. We keep Celery's warm shutdown (the worker exits the moment its
jobs are done) and arm a timer when it starts; if the timer fires first, it sends the
worker SIGQUIT, and Celery's cold shutdown cancels the running jobs and restores their
unacknowledged messages to their queues ("Restoring N unacknowledged message(s)"), where
another worker takes them. A job lost at that point is impossible by construction: its
message has been in Redis (kombu's ``unacked`` hash) all along.

Pool children are moved to process groups of their own, so a SIGTERM sent to the whole
group (a terminal, an init that signals the group, ``kill -- -PGID``) reaches only the
main process, which decides; the children keep working on their jobs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init, worker_shutting_down
from celery.worker import state

from worker import liveness

log = logging.getLogger(__name__)


def install(shutdown_timeout: float, heartbeat_file: Path | None = None) -> None:
    """Connect the deadline and the child isolation to Celery's signals (once per process)."""

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
        timer = threading.Timer(shutdown_timeout, _deadline_passed, args=(shutdown_timeout,))
        timer.daemon = True
        timer.start()

    def own_process_group(**_: Any) -> None:
        os.setpgid(0, 0)

    worker_shutting_down.connect(arm_deadline, weak=False)
    worker_process_init.connect(own_process_group, weak=False)


def _deadline_passed(timeout: float) -> None:
    if not state.active_requests:
        # The jobs are done and Celery is only closing its connections: let it finish.
        return
    log.warning(
        "shutdown deadline of %s s passed with a job still running: "
        "cancelling it and returning its message to the queue",
        timeout,
    )
    os.kill(os.getpid(), signal.SIGQUIT)
