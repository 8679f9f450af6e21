"""A job's Celery task message, byte for byte what ``send_task`` would LPUSH, without Redis.

:func:`worker.enqueue.submit` writes the job record and pushes its message in one Lua
script (one round trip, atomic), so it needs the message as the list entry kombu's Redis
transport would write, before anything is sent. Nothing here assembles a message by
hand: :meth:`MessageBuilder.build` makes the calls Celery's ``send_task`` makes (routing,
the task message of protocol 2, ``send_task_message`` with its headers and delivery mode)
and kombu's own ``Producer.publish`` (serializer, ``prepare_message``) and virtual
``Channel.basic_publish`` (``encode_body``, body_encoding, delivery_tag, delivery_info)
down to the Redis channel's ``_put``, which picks the list from the priority and
serializes the envelope. Only the last step differs: the channel is never connected,
and ``_put`` hands its LPUSH to a collector (kombu's publish-batch hook) instead of
Redis. ``tests/worker/test_message.py`` compares the result with what a real
``send_task`` leaves in the list, field by field.

Our queues route through the anonymous exchange (``Queue(q, routing_key=q)`` is a direct
exchange, which Celery turns into exchange ``""`` and routing key = the queue name), so
no binding table is read: the list is the queue's name, as it is for a real publish.
The queue is not declared either (``declare=[]``): for Redis, declaring only records a
binding, which an anonymous-exchange publish never reads, and every worker declares the
queues it consumes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu.transport import virtual

from worker.queues import ENQUEUED_AT_HEADER


class _Collector:
    """What kombu's Redis ``_put`` calls instead of a pipeline when it publishes in a batch."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def add(self, *command: Any) -> None:
        self.commands.append(command)


def _detached_channel(transport: Any) -> Any:
    """A channel of the app's own Redis transport class that never connects.

    ``virtual.Channel.__init__`` takes the transport options (body encoding, priority
    steps, key prefix...) exactly as a real channel does; the Redis channel's own
    ``__init__`` is skipped because all it adds is a connection (and a PING).
    """
    base: Any = transport.Channel

    class DetachedChannel(base):  # type: ignore[misc]
        collector: _Collector | None = None

        def __init__(self, transport: Any) -> None:
            virtual.Channel.__init__(self, transport)
            self._expires: dict[str, int] = {}  # no queue of ours has x-expires

        def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
            kwargs.pop("_publish_batch", None)
            super()._put(queue, message, _publish_batch=self.collector, **kwargs)

    return DetachedChannel(transport)


class MessageBuilder:
    """Builds ``(list key, payload)`` for a job: what ``send_task`` would LPUSH.

    One per Celery app (:func:`message_builder`); safe to share between threads.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        connection = app.connection_for_write()  # a kombu Connection: never connected here
        transport = connection.transport
        if transport.driver_type != "redis":
            raise RuntimeError(
                f"one-round-trip enqueue needs the Redis transport, not {transport.driver_type}"
            )
        self._connection = connection
        self._channel = _detached_channel(transport)
        self._producer = app.amqp.Producer(self._channel, auto_declare=False)
        self._lock = threading.Lock()
        # Read once: configuration lookups are slow, and these are fixed once the app runs.
        self._router = app.amqp.router
        self._create_task_message = app.amqp.create_task_message
        self._send_task_message = app.amqp.send_task_message
        self._sent_event = bool(app.conf.task_send_sent_event)

    def build(
        self, job_id: str, kind: str, args: Mapping[str, Any], queue: str, enqueued_at: float
    ) -> tuple[str, str]:
        """The Redis list and the entry ``send_task`` would push for this job.

        What ``app.send_task(kind, kwargs=args, task_id=job_id, queue=queue,
        headers={ENQUEUED_AT_HEADER: enqueued_at})`` (:func:`worker.enqueue.publish`) does,
        through the same calls: the router, ``amqp.create_task_message`` (protocol 2),
        ``amqp.send_task_message`` and kombu's producer and channel; with ``retry=False``
        (no I/O happens, nothing to retry) and ``declare=[]`` (see the module docstring).
        Left out are the parts of ``send_task`` that add nothing to a message of ours: the
        task-registry lookup (the API registers no task bodies), result-backend hooks and
        the result object (results are ignored). ``tests/worker/test_message.py`` holds the
        two to the same output.
        """
        app = self.app
        kwargs = dict(args)
        options = self._router.route({"queue": queue}, kind, (), kwargs, None)
        root_id = parent_id = None
        parent = app.current_worker_task  # as send_task: a job queued from inside a task
        if parent is not None:
            root_id = parent.request.root_id or parent.request.id
            parent_id = parent.request.id
        message = self._create_task_message(
            job_id,
            kind,
            None,
            kwargs,
            reply_to=app.thread_oid,
            create_sent_event=self._sent_event,
            root_id=root_id,
            parent_id=parent_id,
            ignore_result=None,
            **options,
        )
        collector = _Collector()
        with self._lock:
            self._channel.collector = collector
            try:
                self._send_task_message(
                    self._producer,
                    kind,
                    message,
                    headers={ENQUEUED_AT_HEADER: enqueued_at},
                    retry=False,
                    declare=[],
                    **options,
                )
            finally:
                self._channel.collector = None
        if len(collector.commands) != 1 or collector.commands[0][0] != "lpush":
            raise RuntimeError(
                f"kombu published {collector.commands!r} for one task, not one LPUSH: "
                "this kombu version or broker configuration is not supported"
            )
        _, key, payload = collector.commands[0]
        # The transport's client adds the global key prefix when it sends the command.
        return self._channel.global_keyprefix + key, payload

    def close(self) -> None:
        self._connection.release()


_ATTRIBUTE = "_bgworker_message_builder"
_builders_lock = threading.Lock()


def message_builder(app: Celery) -> MessageBuilder:
    """The app's builder, made on first use (a channel and a producer, no connection)."""
    builder: MessageBuilder | None = getattr(app, _ATTRIBUTE, None)
    if builder is None:
        with _builders_lock:
            builder = getattr(app, _ATTRIBUTE, None)
            if builder is None:
                builder = MessageBuilder(app)
                setattr(app, _ATTRIBUTE, builder)
    return builder
