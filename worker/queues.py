"""The three queues, and how to read their depth straight from Redis.

Each queue is exactly one Redis list named after it (no priority sub-lists, no key
prefix), so ``LLEN <queue>`` is the number of waiting jobs: the number a KEDA
``redis`` trigger with ``listName: <queue>`` scales on. Messages a worker has taken
but not yet acknowledged sit in kombu's ``unacked`` hash instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from worker.jobs import DEAD_SET, SCHEDULED_SET

# Strict order: a worker consuming several queues empties the first before the next.
QUEUES: tuple[str, ...] = ("critical", "default", "low")
DEFAULT_QUEUE = "default"

# kombu's Redis transport keeps taken-but-unacknowledged messages here (late acks).
UNACKED_HASH = "unacked"

# Header we add to every message so the age of the oldest waiting job can be read
# without a second data structure.
ENQUEUED_AT_HEADER = "bgworker_enqueued_at"


@dataclass(frozen=True)
class QueueDepth:
    name: str
    waiting: int
    oldest_age_seconds: float


def read_depths(client: redis.Redis, now: float | None = None) -> list[QueueDepth]:
    """Waiting jobs and age of the oldest one, per queue, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue)
        # Producers LPUSH and workers BRPOP, so the oldest message is the last element.
        pipe.lindex(queue, -1)
    replies = pipe.execute()
    now = time.time() if now is None else now
    depths = []
    for i, queue in enumerate(QUEUES):
        waiting, oldest = replies[2 * i], replies[2 * i + 1]
        depths.append(QueueDepth(queue, int(waiting), _age(oldest, now)))
    return depths


def in_flight(client: redis.Redis) -> int:
    """Jobs taken by a worker and not yet acknowledged (running, or held for a countdown)."""
    return int(client.hlen(UNACKED_HASH))


def report(client: redis.Redis) -> dict[str, object]:
    """Depths, in-flight and dead-letter counts (``GET /v1/queues``, ``bgworker queues``)."""
    return {
        "queues": {
            q.name: {"waiting": q.waiting, "oldest_age_seconds": round(q.oldest_age_seconds, 3)}
            for q in read_depths(client)
        },
        "in_flight": in_flight(client),
        "scheduled": int(client.zcard(SCHEDULED_SET)),
        "dead": int(client.zcard(DEAD_SET)),
    }


def _age(raw: bytes | None, now: float) -> float:
    if raw is None:
        return 0.0
    try:
        headers = json.loads(raw).get("headers") or {}
        enqueued_at = float(headers[ENQUEUED_AT_HEADER])
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0.0  # a message sent by another producer: its age is unknown
    return max(0.0, now - enqueued_at)
