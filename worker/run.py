"""``bgworker worker``: this process becomes the Celery worker's main process.

No wrapper stays between the container runtime and Celery: SIGTERM sent to this PID
is Celery's own warm shutdown (with our deadline, see :mod:`worker.shutdown`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from worker import liveness, shutdown
from worker.celery_app import create_celery
from worker.queues import QUEUES
from worker.settings import Settings


def run_worker(
    settings: Settings,
    queues: Sequence[str],
    concurrency: int,
    heartbeat_file: Path | None = None,
) -> None:
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    app = create_celery(settings, with_tasks=True)
    if heartbeat_file is not None:
        app.steps["consumer"].add(liveness.heartbeat_step(heartbeat_file))
    shutdown.install(settings.shutdown_timeout, heartbeat_file, lambda: app.store)
    app.worker_main(worker_argv(settings, queues, concurrency))


def worker_argv(
    settings: Settings, queues: Sequence[str], concurrency: int, name: str = "bgworker"
) -> list[str]:
    """Celery's ``worker`` command line as bgworker runs it (the bench's bare-Celery
    anchor uses it too, so the two differ only in what bgworker adds around a task)."""
    return [
        "worker",
        # Listed in priority order whatever order the caller gave: kombu's "priority"
        # strategy empties the first queue before it looks at the next.
        "--queues",
        ",".join(q for q in QUEUES if q in queues),
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "--loglevel",
        settings.log_level,
        "--hostname",
        f"{name}-{os.getpid()}@{socket.gethostname()}",
        # Mingle and gossip cost a second at start and broadcast traffic; we use neither.
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
    ]
