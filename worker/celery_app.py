"""The Celery application: broker, queues, acknowledgement and shutdown semantics.

Both sides build it with :func:`create_celery`: the API only to send tasks by name,
the worker with the task modules included. Nothing here is created at import time.
"""

from __future__ import annotations

from functools import cached_property

from celery import Celery
from kombu import Queue

from worker.jobs import JobStore
from worker.queues import DEFAULT_QUEUE, QUEUES
from worker.redis_client import (
    broker_transport_options,
    broker_url,
    broker_use_ssl,
    sync_client,
)
from worker.settings import Settings
from worker.storage import Storage

TASK_MODULES = ["worker.tasks.images"]
DEBUG_TASK_MODULES = ["worker.tasks.debug"]


class BgworkerCelery(Celery):
    """Celery app that also carries bgworker's settings and per-process clients."""

    settings: Settings

    @cached_property
    def store(self) -> JobStore:
        # Created on first use in each process: redis-py pools must not cross a fork.
        client = sync_client(
            self.settings,
            socket_connect_timeout=2,
            socket_timeout=10,
            health_check_interval=30,
        )
        return JobStore(client, self.settings.job_retention_seconds)

    @cached_property
    def storage(self) -> Storage:
        return Storage(self.settings.storage_dir)


def create_celery(settings: Settings, *, with_tasks: bool = False) -> BgworkerCelery:
    app = BgworkerCelery(
        "bgworker",
        broker=broker_url(settings),
        include=_task_modules(settings) if with_tasks else [],
        set_as_current=with_tasks,
    )
    app.settings = settings
    annotations = {
        task: {"soft_time_limit": limits.soft, "time_limit": limits.hard}
        for task, limits in settings.task_time_limits.items()
    }
    app.conf.update(
        # One plain list per queue, named after it: what KEDA's LLEN sees.
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=False,
        # With Sentinel, also the master name and the sentinels' connection arguments.
        broker_transport_options=broker_transport_options(
            settings,
            queue_order_strategy="priority",  # critical before default before low
            visibility_timeout=settings.visibility_timeout,
            # kombu restores expired unacked messages only inside live workers, every
            # interval * throttle seconds: make the interval the only knob.
            unacked_restore_interval=settings.restore_interval,
            unacked_restore_throttle=1,
            # Workers take turns restoring under a lock that a worker killed mid-scan (or a
            # Redis restart, from its append-only file) leaves behind until it expires;
            # kombu's 300 s froze every redelivery for five minutes. A scan takes
            # milliseconds, and a restore is one transaction, so two scans at once after
            # an early expiry cannot restore a message twice.
            unacked_mutex_expire=settings.restore_interval,
            socket_connect_timeout=2,
            socket_timeout=10,
        ),
        # TLS verified as redis-py does it (kombu alone would not check a rediss:// broker).
        broker_use_ssl=broker_use_ssl(settings),
        broker_connection_retry_on_startup=True,
        # A publish to an unreachable Redis must fail fast: the API answers 503.
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        # Late acks: the message stays in Redis until the job is done, so a worker that
        # dies mid-job loses nothing; a pool child that dies has its job requeued.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # When the broker connection drops, kombu restores the unacknowledged messages at
        # once; the jobs still running must stop, or a second worker runs them alongside.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.time_limit,
        task_annotations=annotations,
        worker_max_tasks_per_child=settings.max_tasks_per_child or None,
        worker_max_memory_per_child=settings.max_memory_per_child or None,
        worker_send_task_events=False,
        worker_hijack_root_logger=True,
        enable_utc=True,
    )
    return app


def _task_modules(settings: Settings) -> list[str]:
    return TASK_MODULES + (DEBUG_TASK_MODULES if settings.debug_tasks else [])
