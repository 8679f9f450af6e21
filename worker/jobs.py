"""Job records: one Redis hash per job, a stream of its changes, and the dead-letter set.

A record is what clients see at ``GET /v1/jobs/{id}``. Every change of state goes through
one Lua script that checks the transition, writes the hash, appends the new record to the
job's event stream (what ``/events`` serves) and refreshes the retention, atomically: a
reader never sees a state without its event, and a late or duplicate delivery cannot move a
finished job backwards.

States::

    queued ──► running ──► succeeded
      │          │ ▲ ──► failed        (permanent error)
      │          ▼ │ ──► dead ──► queued (replayed from the dead-letter set)
      │        retrying
      └──────────┴──────► cancelled
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker.errors import Conflict, NotFound

STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})

KEY_PREFIX = "bgworker:"
DEAD_SET = KEY_PREFIX + "dead"
STATS_STATES = KEY_PREFIX + "stats:states"
STATS_FAILURES = KEY_PREFIX + "stats:failures"
STATS_DURATION = KEY_PREFIX + "stats:duration"
EVENTS_MAXLEN = 200

# Bucket bounds of the job duration histogram, in seconds (thumbnails ~0.2 s, reports minutes).
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

_ID = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(job_id: str) -> bool:
    """Ids are also path components in storage: accept nothing but our own format."""
    return bool(_ID.match(job_id))


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}job:{job_id}"


def events_key(job_id: str) -> str:
    return f"{KEY_PREFIX}job:{job_id}:events"


def idempotency_key(key: str) -> str:
    return f"{KEY_PREFIX}idem:{key}"


@dataclass(frozen=True)
class Job:
    """A job record as stored; :meth:`public` is its API form."""

    id: str
    kind: str
    state: str
    queue: str
    args: dict[str, Any]
    progress: int
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: dict[str, str] | None
    result: Any

    @classmethod
    def from_hash(cls, data: Mapping[Any, Any]) -> Job:
        """From a Redis hash (or a stream entry, which holds a copy of the hash)."""
        d = {_s(k): _s(v) for k, v in data.items()}
        return cls(
            id=d["id"],
            kind=d["kind"],
            state=d["state"],
            queue=d.get("queue", ""),
            args=json.loads(d.get("args") or "{}"),
            progress=int(float(d.get("progress") or 0)),
            attempts=int(d.get("attempts") or 0),
            created_at=float(d["created_at"]),
            started_at=_float_or_none(d.get("started_at")),
            finished_at=_float_or_none(d.get("finished_at")),
            error=json.loads(d["error"]) if d.get("error") else None,
            result=json.loads(d["result"]) if d.get("result") else None,
        )

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": self.progress,
            "attempts": self.attempts,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "result": self.result,
        }


def error_info(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


# KEYS: job hash, events stream, state stats hash, dead set
# ARGV: new state, allowed current states ("" = any), ttl, now, job id, flags, field/value pairs...
# flags: "a" = count an attempt, "s" = set started_at, "d" = add to dead set, "q" = leave dead set
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, false} end
if ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. cur .. ',', 1, true) then
  return {0, cur}
end
local flags = ARGV[6]
redis.call('HSET', KEYS[1], 'state', ARGV[1])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if string.find(flags, 'a', 1, true) then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
if string.find(flags, 's', 1, true) then redis.call('HSETNX', KEYS[1], 'started_at', ARGV[4]) end
if string.find(flags, 'd', 1, true) then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5]) end
if string.find(flags, 'q', 1, true) then redis.call('ZREM', KEYS[4], ARGV[5]) end
if cur ~= ARGV[1] then redis.call('HINCRBY', KEYS[3], ARGV[1], 1) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', $MAXLEN, '*', unpack(redis.call('HGETALL', KEYS[1])))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {1, cur}
""".replace("$MAXLEN", str(EVENTS_MAXLEN))

# KEYS: job hash, events stream.  ARGV: progress, ttl.  Returns the current state.
_PROGRESS = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= 'running' then return cur end
if redis.call('HGET', KEYS[1], 'progress') == ARGV[1] then return cur end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', $MAXLEN, '*', unpack(redis.call('HGETALL', KEYS[1])))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return cur
""".replace("$MAXLEN", str(EVENTS_MAXLEN))


class JobStore:
    """Reads and changes job records; shared by the API (in a thread) and the workers."""

    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.client = client
        self.retention = retention_seconds
        self._transition = client.register_script(_TRANSITION)
        self._progress = client.register_script(_PROGRESS)

    # -- creation -------------------------------------------------------------------
    def create(
        self,
        kind: str,
        args: Mapping[str, Any],
        queue: str,
        *,
        job_id: str | None = None,
        idempotency: str | None = None,
    ) -> tuple[Job, bool]:
        """Write a ``queued`` record; with an idempotency key, return the earlier job instead.

        Returns ``(job, created)``. The caller enqueues only when ``created``.
        """
        job_id = job_id or new_id()
        if idempotency is not None:
            ikey = idempotency_key(idempotency)
            if not self.client.set(ikey, job_id, nx=True, ex=self.retention):
                earlier = self.get(_s(self.client.get(ikey) or b""))
                if earlier is not None:
                    return earlier, False
                # The earlier job expired or its request failed half-way: start afresh.
                self.client.set(ikey, job_id, ex=self.retention)
        now = time.time()
        record: dict[Any, Any] = {
            "id": job_id,
            "kind": kind,
            "state": "queued",
            "queue": queue,
            "args": json.dumps(dict(args), separators=(",", ":")),
            "progress": "0",
            "attempts": "0",
            "created_at": repr(now),
        }
        if idempotency is not None:
            record["idempotency"] = idempotency
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(job_key(job_id), mapping=record)
        pipe.expire(job_key(job_id), self.retention)
        pipe.xadd(events_key(job_id), record, maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.expire(events_key(job_id), self.retention)
        pipe.hincrby(STATS_STATES, "queued", 1)
        pipe.execute()
        return Job.from_hash(record), True

    def discard(self, job: Job) -> None:
        """Undo :meth:`create` when the job could not be enqueued (the caller gets a 503)."""
        raw = self.client.hget(job_key(job.id), "idempotency")
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(job_key(job.id), events_key(job.id))
        if raw:
            pipe.delete(idempotency_key(_s(raw)))
        pipe.hincrby(STATS_STATES, "queued", -1)
        pipe.execute()

    # -- reads ----------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        if not valid_id(job_id):
            return None
        data = self.client.hgetall(job_key(job_id))
        return Job.from_hash(data) if data else None

    def find_idempotent(self, key: str) -> Job | None:
        """The job an earlier request with this Idempotency-Key created, if it still exists."""
        job_id = self.client.get(idempotency_key(key))
        return self.get(_s(job_id)) if job_id else None

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise NotFound(
                f"no job {job_id!r}: the id is wrong, or the record expired after its retention"
            )
        return job

    # -- transitions ----------------------------------------------------------------
    def transition(
        self,
        job_id: str,
        state: str,
        allowed_from: Sequence[str] = (),
        flags: str = "",
        **fields: object,
    ) -> tuple[bool, str | None]:
        """Move a job to ``state`` if it is in one of ``allowed_from``; returns (done, previous)."""
        argv: list[Any] = [
            state,
            ",".join(allowed_from),
            self.retention,
            repr(time.time()),
            job_id,
            flags or "-",
        ]
        for name, value in fields.items():
            argv += [name, _encode(value)]
        done, previous = self._transition(
            keys=[job_key(job_id), events_key(job_id), STATS_STATES, DEAD_SET], args=argv
        )
        return bool(done), _s(previous) if previous else None

    def begin(self, job_id: str) -> tuple[bool, str | None]:
        """A worker starts (or restarts, after a redelivery) the job."""
        return self.transition(
            job_id, "running", ("queued", "retrying", "running"), flags="as", error=""
        )

    def set_progress(self, job_id: str, percent: int) -> str | None:
        """Record progress; returns the job's state so a task notices a cancellation."""
        state = self._progress(
            keys=[job_key(job_id), events_key(job_id)], args=[int(percent), self.retention]
        )
        return _s(state) if state else None

    def succeed(self, job_id: str, result: object, kind: str, duration: float) -> bool:
        done, _ = self.transition(
            job_id,
            "succeeded",
            ("running",),
            progress=100,
            result=json.dumps(result),
            finished_at=time.time(),
            error="",
        )
        self.observe(kind, duration)
        return done

    def retrying(self, job_id: str, error: dict[str, str]) -> bool:
        return self.transition(job_id, "retrying", ("running",), error=error)[0]

    def fail(self, job_id: str, kind: str, error: dict[str, str], *, dead: bool) -> bool:
        """End a job as ``failed`` (permanent) or ``dead`` (retries exhausted, dead-lettered)."""
        state = "dead" if dead else "failed"
        done, _ = self.transition(
            job_id,
            state,
            ("queued", "running", "retrying"),
            flags="d" if dead else "",
            error=error,
            finished_at=time.time(),
        )
        if done:
            self.client.hincrby(STATS_FAILURES, f"{kind}|{error['code']}", 1)
        return done

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished; a running task stops at its next progress step."""
        job = self.require(job_id)
        done, previous = self.transition(
            job_id, "cancelled", ("queued", "running", "retrying"), finished_at=time.time()
        )
        if not done:
            raise Conflict(
                f"job {job_id} has already finished ({previous}); "
                "only unfinished jobs can be cancelled"
            )
        return self.require(job.id)

    def requeue_dead(self, job_id: str) -> Job:
        """Put a dead job back to ``queued`` (the caller then enqueues it again)."""
        self.require(job_id)
        done, previous = self.transition(
            job_id, "queued", ("dead",), flags="q", progress=0, finished_at="", error=""
        )
        if not done:
            raise Conflict(f"job {job_id} is {previous}, not dead: only dead jobs can be replayed")
        return self.require(job_id)

    # -- dead letters and statistics --------------------------------------------------
    def dead(self, limit: int = 100) -> list[Job]:
        """Dead jobs, newest first; ids whose record expired are pruned on the way."""
        ids: list[bytes] = self.client.zrevrange(DEAD_SET, 0, max(0, limit - 1))  # type: ignore[assignment]
        jobs: list[Job] = []
        gone: list[bytes] = []
        for raw in ids:
            job = self.get(_s(raw))
            if job is None:
                gone.append(raw)
            else:
                jobs.append(job)
        if gone:
            self.client.zrem(DEAD_SET, *gone)
        return jobs

    def dead_count(self) -> int:
        return int(self.client.zcard(DEAD_SET))

    def observe(self, kind: str, seconds: float) -> None:
        """Add one job duration to the shared histogram that ``/metrics`` exposes."""
        bucket = next((str(b) for b in DURATION_BUCKETS if seconds <= b), "+Inf")
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(STATS_DURATION, f"{kind}|{bucket}", 1)
        pipe.hincrbyfloat(STATS_DURATION, f"{kind}|sum", seconds)
        pipe.execute()


def _encode(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float_or_none(raw: str | None) -> float | None:
    return float(raw) if raw else None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
