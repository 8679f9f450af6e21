"""Turning a validated request into a job record plus a message on its queue.

Used by the API, the dead-letter replay and the CLI. Tasks are sent by name: nothing
here imports a task body. Every message is built by :class:`worker.message.MessageBuilder`
(exactly what Celery's ``send_task`` would push) and pushed by a Lua script in the same
step as the record changes: a job for now is created and queued at once (:func:`submit`,
:func:`submit_async`), a due delayed job or retry leaves the schedule as it is queued
(:func:`promote_due`), and a replayed dead job is revived as it is queued
(:func:`replay_dead`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from worker.jobs import AsyncJobStore, Job, JobStore, new_id
from worker.message import message_builder
from worker.queues import ENQUEUED_AT_HEADER

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
    extra: Mapping[str, str] | None = None,
) -> tuple[Job, bool]:
    """Create the record and, for a job to run now, push its message; ``(job, created)``.

    One Lua script, one round trip (:data:`worker.jobs._CREATE`): the record, its first
    event, the idempotency key and the Celery message on the queue's list (built by
    :class:`worker.message.MessageBuilder`, exactly what ``send_task`` would push) are
    written atomically. With an idempotency key seen before, returns the earlier job and
    writes nothing. With a ``countdown`` the job goes to the scheduled set instead and
    :func:`promote_due` publishes it when due: Celery's own countdown would hold the
    message in a worker's memory, invisible to the autoscaler and unacknowledged past any
    visibility timeout.

    What happens if this process dies, or Redis goes away, at each step:

    - before the script is sent (while the message is built): nothing was written. The
      client's connection drops (the API died) or it gets a 503 (Redis unreachable), and
      it retries.
    - while Redis runs the script: nothing, it is atomic. Redis runs it whole or not at
      all (a script is one transaction in the AOF and on replicas), and its only
      command that can fail, the LPUSH, comes first. There is no moment with a record
      but no message, so the safety-net schedule the two-step enqueue needed (record,
      publish, unschedule) is gone, along with its crash windows.
    - after the script ran, before the reply is read (crash, or a dropped connection):
      the job exists and will run, but the client got no answer (or a 503). A retry
      with the same ``Idempotency-Key`` returns that job; without one it is a second
      job. redis-py's own retry of the lost command is harmless: the script sees the
      job id exists and changes nothing.

    Redis errors (down, read-only, out of memory: :data:`BROKER_ERRORS`) propagate
    unchanged; the API answers 503 for them.
    """
    job_id, due, message = _prepare(celery, kind, args, queue, countdown, job_id)
    return store.create(
        kind,
        args,
        queue,
        job_id=job_id,
        idempotency=idempotency,
        due=due,
        message=message,
        extra=extra,
    )


async def submit_async(
    store: AsyncJobStore,
    celery: Celery,
    kind: str,
    args: Mapping[str, Any],
    queue: str,
    *,
    countdown: float = 0,
    job_id: str | None = None,
    idempotency: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> tuple[Job, bool]:
    """:func:`submit` on the event loop: the message is built here (pure Python, about
    50 µs) and the script sent with ``redis.asyncio``, with no thread-pool hop.

    The call is bounded by the store's timeout (:class:`worker.jobs.AsyncJobStore`): past
    it, :class:`redis.TimeoutError` (a 503). As with a socket timeout, the script may have
    run anyway; see :func:`submit` for what that means.
    """
    job_id, due, message = _prepare(celery, kind, args, queue, countdown, job_id)
    return await store.create(
        kind,
        args,
        queue,
        job_id=job_id,
        idempotency=idempotency,
        due=due,
        message=message,
        extra=extra,
    )


def _prepare(
    celery: Celery,
    kind: str,
    args: Mapping[str, Any],
    queue: str,
    countdown: float,
    job_id: str | None,
) -> tuple[str, float | None, tuple[str, str] | None]:
    """A fresh job id, and either a due time (delayed) or the message to push now."""
    job_id = job_id or new_id()
    if countdown > 0:
        return job_id, time.time() + countdown, None
    return job_id, None, message_builder(celery).build(job_id, kind, args, queue, time.time())


def publish(celery: Celery, job: Job) -> None:
    """Publish a job's message through Celery's own ``send_task`` (a kombu connection).

    Not on bgworker's paths any more (they push what :class:`worker.message.MessageBuilder`
    builds, in the same script as the record changes); the reference the builder is
    checked against, and the anchor of the benchmarks.
    """
    celery.send_task(
        job.kind,
        kwargs=job.args,
        task_id=job.id,
        queue=job.queue,
        headers={ENQUEUED_AT_HEADER: time.time()},
    )


def promote_due(store: JobStore, celery: Celery, lease: float = 30.0) -> int:
    """Queue the scheduled jobs whose time has come; returns how many.

    Safe in several processes at once, and never queues a job twice: each due job is
    claimed under a lease, and its message is pushed by the same script that takes it off
    the schedule, only while that claim is the current one (:meth:`JobStore.promote`). A
    promoter that dies, or stalls past its lease, before that script leaves the job to be
    claimed again when the lease runs out.
    """
    ids, lease_until = store.claim_due(time.time(), lease)
    builder = message_builder(celery)
    published = 0
    for job_id in ids:
        job = store.get(job_id)
        if job is None or job.state not in ("queued", "retrying"):
            store.release(job_id, lease_until)  # expired or cancelled: nothing to run
            continue
        message = builder.build(job.id, job.kind, job.args, job.queue, time.time())
        published += store.promote(job_id, lease_until, message)
    return published


def replay_dead(store: JobStore, celery: Celery, job_id: str) -> Job:
    """Re-enqueue a dead job under the same id (its attempts keep counting).

    One script (:meth:`JobStore.requeue_dead`): the record goes back to ``queued``, leaves
    the dead set and its message goes on its queue together, or nothing changes (a job
    that is not dead: :class:`worker.errors.Conflict`; Redis unavailable or full: the
    error, for a 503).
    """
    job = store.require(job_id)
    message = message_builder(celery).build(job.id, job.kind, job.args, job.queue, time.time())
    return store.requeue_dead(job_id, message)
