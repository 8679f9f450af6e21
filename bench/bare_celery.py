"""The anchor of the worker-overhead benchmark: bare Celery with bgworker's exact settings.

Same broker options, late acks, prefetch 1, JSON, no results, same worker flags and pool;
only the task is a plain Celery task with no job record, state updates or metrics.
``python -m bench.bare_celery CONCURRENCY`` runs the worker.
"""

from __future__ import annotations

import sys

from celery import Celery

from worker.celery_app import create_celery
from worker.queues import QUEUES
from worker.run import worker_argv
from worker.settings import Settings

NOOP = "bare.noop"


def create_app(settings: Settings | None = None) -> Celery:
    app = create_celery(settings or Settings.from_env())

    @app.task(name=NOOP, acks_late=True, reject_on_worker_lost=True)
    def noop() -> None:
        return None

    return app


def main(concurrency: int) -> None:
    settings = Settings.from_env()
    app = create_app(settings)
    app.worker_main(worker_argv(settings, QUEUES, concurrency, name="bare"))


if __name__ == "__main__":
    main(int(sys.argv[1]))
