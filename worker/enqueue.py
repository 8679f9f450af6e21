"""Turning a validated request into a job record plus a message on its queue.

Used by the API, the dead-letter replay and the CLI. Tasks are sent by name: nothing
here imports a task body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from worker.errors import BrokerUnavailable
from worker.jobs import Job, JobStore
from worker.queues import ENQUEUED_AT_HEADER

log = logging.getLogger(__name__)

# Seconds after which the promoter publishes a job whose publisher died mid-way.
PUBLISH_GRACE = 30.0

# What an unavailable broker raises, from redis-py directly or through kombu: down,
# restarting (loading its data), read-only replica, or out of memory.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
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
    With a ``countdown`` the job goes to the scheduled set and :func:`promote_due`
    publishes it when due: Celery's own countdown would hold the message in a worker's
    memory, invisible to the autoscaler and unacknowledged past any visibility timeout.
    A job for now is scheduled too, :data:`PUBLISH_GRACE` ahead, and unscheduled once
    published: should this process die between the record and the publish, the promoter
    publishes it, so a record never claims a job that no message will run.
    If the publish fails the record is removed again and :class:`BrokerUnavailable` is
    raised: the client is told to retry.
    """
    now = time.time()
    due = now + countdown if countdown > 0 else now + PUBLISH_GRACE
    job, created = store.create(kind, args, queue, job_id=job_id, idempotency=idempotency, due=due)
    if created and countdown <= 0:
        _publish_under_net(store, celery, job, due, undo=lambda: store.discard(job))
    return job, created


def publish(celery: Celery, job: Job) -> None:
    celery.send_task(
        job.kind,
        kwargs=job.args,
        task_id=job.id,
        queue=job.queue,
        headers={ENQUEUED_AT_HEADER: time.time()},
    )


def promote_due(store: JobStore, celery: Celery, lease: float = 30.0) -> int:
    """Publish the scheduled jobs whose time has come; returns how many.

    Safe in several processes at once: each due job is claimed under a lease first, and
    a promoter that dies before publishing leaves it to the next one once the lease runs
    out (at worst a job is published twice; the task skips a duplicate of a finished job).
    """
    ids, lease_until = store.claim_due(time.time(), lease)
    published = 0
    for job_id in ids:
        job = store.get(job_id)
        if job is not None and job.state in ("queued", "retrying"):
            publish(celery, job)
            published += 1
        store.release(job_id, lease_until)
    return published


def replay_dead(store: JobStore, celery: Celery, job_id: str) -> Job:
    """Re-enqueue a dead job under the same id (its attempts keep counting)."""
    due = time.time() + PUBLISH_GRACE
    job = store.requeue_dead(job_id, due)
    _publish_under_net(
        store, celery, job, due, undo=lambda: store.transition(job_id, "dead", ("queued",), "du")
    )
    return job


def _publish_under_net(
    store: JobStore, celery: Celery, job: Job, net_due: float, undo: Callable[[], object]
) -> None:
    """Publish a job whose record carries a safety-net schedule at ``net_due``, then drop it.

    If the publish fails, ``undo`` puts the record back as it was and the caller gets
    :class:`BrokerUnavailable`. If dropping the net fails, nothing is wrong but a later
    duplicate publish by the promoter, which the task skips or reruns harmlessly.
    """
    try:
        publish(celery, job)
    except Exception as exc:
        try:
            undo()
        except Exception:
            log.exception("could not undo job %s after its publish failed", job.id)
        raise BrokerUnavailable(f"could not queue the job: {exc}") from exc
    try:
        store.release(job.id, net_due)
    except Exception as exc:
        log.warning("job %s is queued but its safety net stays: %s", job.id, exc)
