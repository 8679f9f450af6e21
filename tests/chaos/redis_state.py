"""One read of everything in Redis the checks need: where each job's message is (a
queue list, kombu's ``unacked`` hash, the scheduled set, or nowhere), every job record
and idempotency key, and each job's event stream.

Read straight from Redis with plain commands, not through bgworker's code: the checks
judge that code from the outside.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.jobs import SCHEDULED_SET, TERMINAL, events_key, idempotency_key, job_key
from worker.queues import QUEUES, UNACKED_HASH
from worker.reaper import STATS_REAPED

# kombu's names (kombu/transport/redis.py, Channel.unacked_index_key / unacked_mutex_key).
UNACKED_INDEX = "unacked_index"
UNACKED_MUTEX = "unacked_mutex"


@dataclass(frozen=True)
class Event:
    """One entry of a job's event stream: the whole record at that moment."""

    at: float  # from the stream id: Redis' clock, milliseconds
    state: str
    attempts: int
    progress: int
    error: str


@dataclass
class RedisState:
    taken_at: float
    in_queue: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    in_unacked: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    scheduled: dict[str, float] = field(default_factory=dict)
    mutex_ttl_ms: int | None = None  # None: no unacked_mutex
    reaped: int = 0  # jobs the API's reaper found lost in transit and queued again
    records: dict[str, dict[str, str]] = field(default_factory=dict)  # job id -> hash
    idempotency: dict[str, str] = field(default_factory=dict)  # key -> job id
    events: dict[str, list[Event]] = field(default_factory=dict)

    def jobs_by_key(self) -> dict[str, list[str]]:
        """Idempotency key -> every job id whose record carries it (should be one each)."""
        by_key: dict[str, list[str]] = defaultdict(list)
        for job_id, record in self.records.items():
            by_key[record.get("idempotency", "")].append(job_id)
        return by_key

    def whereabouts(self, job_id: str) -> str:
        """Where the job's message is now, in words, for a failure message."""
        places = list(self.in_queue.get(job_id, []))
        places += self.in_unacked.get(job_id, [])
        if job_id in self.scheduled:
            places.append(
                f"in {SCHEDULED_SET} (score {self.scheduled[job_id] - self.taken_at:+.1f} s)"
            )
        if not places:
            places.append("NOWHERE: in no queue, not in unacked, not scheduled")
        if self.mutex_ttl_ms is not None and job_id in self.in_unacked:
            places.append(
                f"{UNACKED_MUTEX} held, expires in {self.mutex_ttl_ms / 1000:.0f} s "
                "(no worker restores unacked messages until then)"
            )
        return "; ".join(places)


def _message_id(raw: bytes | str) -> str | None:
    try:
        payload = json.loads(raw)
        return str(payload["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read(client: redis.Redis, keys: Iterable[str]) -> RedisState:
    """Snapshot the broker's structures, every job record, and the idempotency ``keys``."""
    state = RedisState(taken_at=time.time())
    for queue in QUEUES:
        entries: list[bytes] = client.lrange(queue, 0, -1)  # type: ignore[assignment]
        for pos, raw in enumerate(entries):
            job_id = _message_id(raw)
            if job_id is not None:
                # Producers LPUSH, workers BRPOP: the last entry is the next one out.
                state.in_queue[job_id].append(f"in queue {queue} ({len(entries) - pos} to go)")
    index: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        UNACKED_INDEX, 0, -1, withscores=True
    )
    taken = {_text(tag): score for tag, score in index}
    unacked: dict[bytes, bytes] = client.hgetall(UNACKED_HASH)  # type: ignore[assignment]
    for tag, raw in unacked.items():
        try:
            message, _, routing_key = json.loads(raw)
            job_id = _message_id(json.dumps(message))
        except ValueError:
            continue
        if job_id is not None:
            since = taken.get(_text(tag))
            age = f"taken {state.taken_at - since:.0f} s ago" if since else "not in unacked_index"
            state.in_unacked[job_id].append(f"in unacked (tag {_text(tag)}, {routing_key}, {age})")
    scheduled: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        SCHEDULED_SET, 0, -1, withscores=True
    )
    state.scheduled = {_text(member): float(score) for member, score in scheduled}
    state.reaped = int(client.get(STATS_REAPED) or 0)
    ttl = int(client.pttl(UNACKED_MUTEX))
    state.mutex_ttl_ms = ttl if ttl >= 0 else None
    record_keys = [
        _text(k)
        for k in client.scan_iter(match=job_key("*"), count=1000)
        if not _text(k).endswith(":events")
    ]
    pipe = client.pipeline(transaction=False)
    for key in record_keys:
        pipe.hgetall(key)
    for key, record in zip(record_keys, pipe.execute(), strict=True):
        state.records[key.removeprefix(job_key(""))] = {
            _text(k): _text(v) for k, v in record.items()
        }
    keys = list(keys)
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(idempotency_key(key))
    for key, job_id in zip(keys, pipe.execute(), strict=True):
        if job_id is not None:
            state.idempotency[key] = _text(job_id)
    pipe = client.pipeline(transaction=False)
    for job_id in state.records:
        pipe.xrange(events_key(job_id))
    streams: list[list[tuple[bytes, dict[bytes, bytes]]]] = pipe.execute()
    for job_id, stream in zip(list(state.records), streams, strict=True):
        state.events[job_id] = [_event(entry_id, fields) for entry_id, fields in stream]
    return state


def _event(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    d = {_text(k): _text(v) for k, v in fields.items()}
    error = ""
    if d.get("error"):
        try:
            error = json.loads(d["error"]).get("code", "")
        except (ValueError, AttributeError):
            error = d["error"]
    return Event(
        at=int(_text(entry_id).split("-")[0]) / 1000,
        state=d.get("state", ""),
        attempts=int(d.get("attempts") or 0),
        progress=int(float(d.get("progress") or 0)),
        error=error,
    )


def unfinished(client: redis.Redis, job_ids: list[str]) -> list[str]:
    """The jobs whose record is not terminal (or missing), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(job_key(job_id), "state")
    states = pipe.execute()
    return [
        j for j, s in zip(job_ids, states, strict=True) if s is None or _text(s) not in TERMINAL
    ]
