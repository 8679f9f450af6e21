"""Turning a validated request into a job record plus a message on its queue.

Used by the API, the dead-letter replay and the CLI. Tasks are sent by name: nothing
here imports a task body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from worker.errors import BrokerUnavailable
from worker.jobs import Job, JobStore
from worker.queues import ENQUEUED_AT_HEADER

log = logging.getLogger(__name__)

# What a dead broker raises, from redis-py directly or through kombu.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OperationalError,
)


def submit(
    store: JobStore,
    celery: Celery,
    kind: str,
    args: Mapping[str, Any],
    queue: str,
    *,
    countdown: float = 0,
    job_id: str | None = None,
    idempotency: str | None = None,
) -> tuple[Job, bool]:
    """Create the record, then publish; returns ``(job, created)``.

    With an idempotency key seen before, returns the earlier job and publishes nothing.
    If the publish fails the record is removed again and :class:`BrokerUnavailable` is
    raised: the client is told to retry, and no record claims a job that is not queued.
    """
    job, created = store.create(kind, args, queue, job_id=job_id, idempotency=idempotency)
    if created:
        try:
            publish(celery, job, countdown)
        except BROKER_ERRORS as exc:
            try:
                store.discard(job)
            except BROKER_ERRORS:
                pass  # Redis is gone altogether; the record expires with its retention.
            raise BrokerUnavailable(
                f"could not queue the job: Redis is unreachable ({exc})"
            ) from exc
    return job, created


def publish(celery: Celery, job: Job, countdown: float = 0) -> None:
    celery.send_task(
        job.kind,
        kwargs=job.args,
        task_id=job.id,
        queue=job.queue,
        countdown=countdown or None,
        headers={ENQUEUED_AT_HEADER: time.time() + countdown},
    )


def replay_dead(store: JobStore, celery: Celery, job_id: str) -> Job:
    """Re-enqueue a dead job under the same id (its attempts keep counting)."""
    job = store.requeue_dead(job_id)
    try:
        publish(celery, job)
    except BROKER_ERRORS as exc:
        store.transition(job_id, "dead", ("queued",), flags="d")
        raise BrokerUnavailable(f"could not queue the job: Redis is unreachable ({exc})") from exc
    return job
