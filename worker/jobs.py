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
      │        retrying   (waits in the scheduled set until its backoff has passed)
      └──────────┴──────► cancelled
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from worker.errors import Conflict, NotFound, QueueFull

TERMINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})

KEY_PREFIX = "bgworker:"
DEAD_SET = KEY_PREFIX + "dead"
# Jobs waiting for a time (delay_seconds, retry backoff), scored by when they are due.
SCHEDULED_SET = KEY_PREFIX + "scheduled"
STATS_STATES = KEY_PREFIX + "stats:states"
STATS_FAILURES = KEY_PREFIX + "stats:failures"
STATS_DURATION = KEY_PREFIX + "stats:duration"
# Every unfinished job (queued, running, retrying), scored by its last change: what the
# reaper (worker.reaper) compares with the messages that exist, to find lost ones.
ACTIVE_SET = KEY_PREFIX + "active"
EVENTS_MAXLEN = 200

# Bucket bounds of the job duration histogram, in seconds (thumbnails ~0.2 s, reports minutes).
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

_ID = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(job_id: str) -> bool:
    """Ids are also path components in storage: accept nothing but our own format."""
    return _ID.fullmatch(job_id) is not None


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
    attempts: int  # starts of the body, all deliveries and retries together
    retries: int  # retries scheduled since the job was (re)queued
    deliveries: int  # starts since the last (re)queue: above a few, the worker keeps dying
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: dict[str, str] | None
    result: Any
    owner: str = ""  # the API key's owner that created it ("" before keys existed)
    shared: bool = False  # created public: thumbnails served to anyone with the link
    digest: str = ""  # what the creating request asked for (idempotency check)

    @classmethod
    def from_hash(cls, data: Mapping[Any, Any]) -> Job:
        """From a Redis hash (or a stream entry, which holds a copy of the hash)."""
        d = {text(k): text(v) for k, v in data.items()}
        return cls(
            id=d["id"],
            kind=d["kind"],
            state=d["state"],
            queue=d.get("queue", ""),
            args=json.loads(d.get("args") or "{}"),
            progress=int(float(d.get("progress") or 0)),
            attempts=int(d.get("attempts") or 0),
            retries=int(d.get("retries") or 0),
            deliveries=int(d.get("deliveries") or 0),
            created_at=float(d["created_at"]),
            started_at=_float_or_none(d.get("started_at")),
            finished_at=_float_or_none(d.get("finished_at")),
            error=json.loads(d["error"]) if d.get("error") else None,
            result=json.loads(d["result"]) if d.get("result") else None,
            owner=d.get("owner", ""),
            shared=d.get("public") == "1",
            digest=d.get("digest", ""),
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


# Every script below touches only the keys it is given, plus (by prefix) job hashes.

# Create a record and, for a job to run now, push its Celery message, atomically; with an
# idempotency key seen before, return the earlier job instead and change nothing.
# KEYS: idempotency key, job hash, events stream, state stats hash, scheduled set,
#       queue list (where the message goes), active set
# ARGV: job id, ttl, due ("" = not scheduled), use idempotency ("1"/"0"), job key prefix,
#       message ("" = none), now, the most jobs the queue may hold (0 = no bound),
#       field/value pairs...
# Returns false when created; {2, ''} when the queue is full (nothing written);
# {0, earlier job's record} when the idempotency key names a
# job that still exists; {1, record} when this job id exists already, which only happens
# when the same call runs twice (redis-py retries a command whose reply it lost): the
# second run changes nothing, so a retry never pushes a second message. Records are JSON
# arrays [field, value, ...] as in _TRANSITION.
# The LPUSH is the first write: the only command here that can fail on a key of the wrong
# type, so a failing script leaves nothing behind (Redis has no rollback); a record is
# never written without its message.
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {1, cjson.encode(redis.call('HGETALL', KEYS[2]))}
end
if ARGV[4] == '1' then
  local earlier = redis.call('GET', KEYS[1])
  if earlier then
    local record = redis.call('HGETALL', ARGV[5] .. earlier)
    if #record > 0 then return {0, cjson.encode(record)} end
  end
end
local limit = tonumber(ARGV[8])
if limit > 0 and ARGV[6] ~= '' and redis.call('LLEN', KEYS[6]) >= limit then
  return {2, ''}
end
if ARGV[6] ~= '' then redis.call('LPUSH', KEYS[6], ARGV[6]) end
if ARGV[4] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', $MAXLEN, '*', unpack(fields))
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('HINCRBY', KEYS[4], 'queued', 1)
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1]) end
redis.call('ZADD', KEYS[7], ARGV[7], ARGV[1])
return false
""".replace("$MAXLEN", str(EVENTS_MAXLEN))

# Move a job to a new state if it is in an allowed one, with its side effects, atomically.
# KEYS: job hash, events stream, state stats, dead set, scheduled set, duration stats,
#       failure stats, the list a "p" message goes to (any key without "p"), active set
# ARGV: new state, allowed current states ("" = any), ttl, now, job id, flags,
#       number (a due time or a duration), label (a histogram bucket or an error code),
#       message ("p"; else ""), field/value pairs...
# flags, one effect each: "a" count a start (attempts and deliveries), "s" set started_at
#   once, "d" add to the dead set, "q" leave it, "r" count a retry, "z" schedule at
#   `number`, "u" leave the scheduled set, "h" add duration `number` to bucket `label`,
#   "f" count a failure with code `label`, "c" change nothing unless `attempts` equals
#   `number` (the start the caller saw is still the latest), "n" take back the count of
#   the last start (it ended without the worker dying: a shutdown deadline), "p" LPUSH
#   `message` (first:
#   under maxmemory only a script's first write can be refused, so a full Redis changes
#   nothing rather than half of it).
# Returns {1, previous state, record} or {0, current state}; the record is the job hash as
# one JSON array [field, value, ...] (one bulk string: much cheaper for the client to read
# than a RESP array of some thirty strings, on every job start and end).
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, false} end
if ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. cur .. ',', 1, true) then
  return {0, cur}
end
local flags = ARGV[6]
if string.find(flags, 'c', 1, true) and redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[7] then
  return {0, cur}
end
if string.find(flags, 'p', 1, true) then redis.call('LPUSH', KEYS[8], ARGV[9]) end
redis.call('HSET', KEYS[1], 'state', ARGV[1], unpack(ARGV, 10))
if string.find(flags, 'a', 1, true) then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
end
if string.find(flags, 's', 1, true) then redis.call('HSETNX', KEYS[1], 'started_at', ARGV[4]) end
if string.find(flags, 'd', 1, true) then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5]) end
if string.find(flags, 'q', 1, true) then redis.call('ZREM', KEYS[4], ARGV[5]) end
if string.find(flags, 'r', 1, true) then redis.call('HINCRBY', KEYS[1], 'retries', 1) end
if string.find(flags, 'n', 1, true) then
  if tonumber(redis.call('HGET', KEYS[1], 'deliveries') or '0') > 0 then
    redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
  end
end
if string.find(flags, 'z', 1, true) then redis.call('ZADD', KEYS[5], ARGV[7], ARGV[5]) end
if string.find(flags, 'u', 1, true) then redis.call('ZREM', KEYS[5], ARGV[5]) end
if string.find(flags, 'h', 1, true) then
  local kind = redis.call('HGET', KEYS[1], 'kind')
  redis.call('HINCRBY', KEYS[6], kind .. '|' .. ARGV[8], 1)
  redis.call('HINCRBYFLOAT', KEYS[6], kind .. '|sum', ARGV[7])
end
if string.find(flags, 'f', 1, true) then
  local kind = redis.call('HGET', KEYS[1], 'kind')
  redis.call('HINCRBY', KEYS[7], kind .. '|' .. ARGV[8], 1)
end
if cur ~= ARGV[1] then redis.call('HINCRBY', KEYS[3], ARGV[1], 1) end
if $TERMINAL[ARGV[1]] then
  redis.call('ZREM', KEYS[9], ARGV[5])
else
  redis.call('ZADD', KEYS[9], ARGV[4], ARGV[5])
end
local record = redis.call('HGETALL', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', $MAXLEN, '*', unpack(record))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {1, cur, cjson.encode(record)}
""".replace("$MAXLEN", str(EVENTS_MAXLEN)).replace(
    "$TERMINAL", "({" + ", ".join(f"{state} = true" for state in sorted(TERMINAL)) + "})"
)

# Take back the count of a start that ended without its worker dying (a Redis outage
# cancelled it), if the job is unfinished and has counted starts since its last (re)queue.
# KEYS: job hash.  ARGV: the attempts of that start (0 = not known).  Returns 1 if done.
_UNCOUNT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' and state ~= 'queued' then return 0 end
local deliveries = tonumber(redis.call('HGET', KEYS[1], 'deliveries') or '0')
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if deliveries < 1 or attempts < tonumber(ARGV[1]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
return 1
"""

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

# Claim due scheduled jobs: push their score to a lease deadline, so that a promoter that
# dies before publishing leaves them to be claimed again when the lease runs out.
# KEYS: scheduled set.  ARGV: now, lease deadline, limit.
_CLAIM = """
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""

# Publish one claimed scheduled job: its message goes on its queue in the same step as it
# leaves the schedule, and only under the claim that is still current (a promoter whose
# lease ran out while it was stalled publishes nothing: the next claimer does).
# KEYS: scheduled set, job hash, queue list.  ARGV: job id, lease deadline, message.
# Returns 1 when the message was pushed, 0 otherwise.
_PROMOTE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
local state = redis.call('HGET', KEYS[2], 'state')
local due = state == 'queued' or state == 'retrying'
if due then redis.call('LPUSH', KEYS[3], ARGV[3]) end
redis.call('ZREM', KEYS[1], ARGV[1])
if due then return 1 end
return 0
"""

# Forget a claimed job only if nobody rescheduled it meanwhile (a fast retry sets a new score).
# KEYS: scheduled set.  ARGV: job id, lease deadline it was claimed with.
_RELEASE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""


class JobStore:
    """Reads and changes job records; shared by the API (in a thread) and the workers."""

    def __init__(self, client: redis.Redis, retention_seconds: int, max_queued: int = 0) -> None:
        self.client = client
        self.retention = retention_seconds
        self.max_queued = max_queued  # jobs one queue may hold (0: no bound)
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._progress = client.register_script(_PROGRESS)
        self._uncount = client.register_script(_UNCOUNT)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._promote = client.register_script(_PROMOTE)

    # -- creation -------------------------------------------------------------------
    def create(
        self,
        kind: str,
        args: Mapping[str, Any],
        queue: str,
        *,
        job_id: str | None = None,
        idempotency: str | None = None,
        due: float | None = None,
        message: tuple[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[Job, bool]:
        """Write a ``queued`` record; with an idempotency key seen before, return that job.

        Returns ``(job, created)``. A ``due`` time also puts the job in the scheduled set,
        from which :func:`worker.enqueue.promote_due` publishes it when the time comes.
        A ``message`` (list key, entry: :class:`worker.message.MessageBuilder`) is pushed
        in the same script: record and message exist together or not at all. ``job_id``
        must be fresh (:func:`new_id`). ``extra`` fields go on the record as they are
        (``owner``, ``public``, ``digest``).
        """
        call = _CreateCall(
            self.retention, kind, args, queue, job_id, idempotency, due, message, extra
        ).bounded(self.max_queued)
        return call.result(self._create(keys=call.keys, args=call.argv))

    # -- reads ----------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        if not valid_id(job_id):
            return None
        data = self.client.hgetall(job_key(job_id))
        return Job.from_hash(data) if data else None

    def find_idempotent(self, key: str) -> Job | None:
        """The job an earlier request with this Idempotency-Key created, if it still exists."""
        job_id = self.client.get(idempotency_key(key))
        return self.get(text(job_id)) if job_id else None

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise _not_found(job_id)
        return job

    # -- transitions ----------------------------------------------------------------
    def transition(
        self,
        job_id: str,
        state: str,
        allowed_from: Sequence[str] = (),
        flags: str = "",
        number: float | None = None,
        label: str = "",
        push: tuple[str, str] | None = None,
        **fields: object,
    ) -> tuple[Job | None, str | None]:
        """Move a job to ``state`` if it is in one of ``allowed_from`` (flags: see _TRANSITION).

        ``push`` (list key, entry) is a message to LPUSH in the same step (flag ``p``).
        Returns ``(record after the change, previous state)``, or ``(None, current state)``
        when the job is missing or in a state that does not allow the change.
        """
        if not valid_id(job_id):  # a key of another kind (say "<id>:events") is never touched
            return None, None
        if push is not None:
            flags += "p"
        argv: list[Any] = [
            state,
            ",".join(allowed_from),
            self.retention,
            repr(time.time()),
            job_id,
            flags or "-",
            repr(number) if number is not None else "",
            label,
            push[1] if push is not None else "",
        ]
        for name, value in fields.items():
            argv += [name, _encode(value)]
        keys = [job_key(job_id), events_key(job_id), STATS_STATES, DEAD_SET, SCHEDULED_SET]
        keys += [STATS_DURATION, STATS_FAILURES, push[0] if push is not None else keys[0]]
        keys.append(ACTIVE_SET)
        reply = self._transition(keys=keys, args=argv)
        done, previous = reply[0], text(reply[1]) if reply[1] else None
        if not done:
            return None, previous
        flat = json.loads(reply[2])
        return Job.from_hash(dict(zip(flat[::2], flat[1::2], strict=True))), previous

    def begin(self, job_id: str) -> tuple[Job | None, str | None]:
        """A worker starts (or, after a redelivery, restarts) the job."""
        return self.transition(
            job_id, "running", ("queued", "retrying", "running"), flags="as", error=""
        )

    def uncount_delivery(self, job_id: str, attempts: int = 0) -> bool:
        """Take back the delivery count of start ``attempts`` (0: the latest), which ended
        without its worker dying (Redis failed under it), so that the poison-message guard
        (``MAX_DELIVERIES``) counts only real deaths. Changes nothing on a finished job or
        one whose count was reset since (a retry, a replay)."""
        return bool(self._uncount(keys=[job_key(job_id)], args=[attempts]))

    def set_progress(self, job_id: str, percent: int) -> str | None:
        """Record progress; returns the job's state so a task notices a cancellation."""
        state = self._progress(
            keys=[job_key(job_id), events_key(job_id)], args=[int(percent), self.retention]
        )
        return text(state) if state else None

    def succeed(self, job_id: str, result: object, duration: float) -> bool:
        """Record the result, and the run time in the duration histogram, in one step."""
        bucket = next((str(b) for b in DURATION_BUCKETS if duration <= b), "+Inf")
        job, _ = self.transition(
            job_id,
            "succeeded",
            ("running",),
            flags="h",
            number=duration,
            label=bucket,
            progress=100,
            result=json.dumps(result),
            finished_at=time.time(),
            error="",
        )
        return job is not None

    def retrying(self, job_id: str, error: dict[str, str], due: float) -> bool:
        """Schedule the next attempt at ``due`` (the scheduled set, not worker memory)."""
        job, _ = self.transition(
            job_id, "retrying", ("running",), flags="rz", number=due, error=error, deliveries=0
        )
        return job is not None

    def fail(self, job_id: str, error: dict[str, str], *, dead: bool) -> bool:
        """End a job as ``failed`` (permanent) or ``dead`` (retries exhausted, dead-lettered)."""
        job, _ = self.transition(
            job_id,
            "dead" if dead else "failed",
            ("queued", "running", "retrying"),
            flags="duf" if dead else "uf",
            label=error["code"],
            error=error,
            finished_at=time.time(),
        )
        return job is not None

    def requeued(self, job_id: str, attempts: int) -> bool:
        """Back to ``queued``: a shutdown deadline put the message of start ``attempts``
        back on its queue. Nothing changes if the job has moved on meanwhile (finished,
        or already started again elsewhere, which counts another attempt). The start is
        not counted as a worker death: the worker stopped as asked."""
        job, _ = self.transition(
            job_id, "queued", ("running",), flags="cn", number=attempts, progress=0
        )
        return job is not None

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished; a running task stops at its next progress step."""
        job, previous = self.transition(
            job_id,
            "cancelled",
            ("queued", "running", "retrying"),
            flags="u",
            finished_at=time.time(),
        )
        if job is None:
            if previous is None:
                raise _not_found(job_id)
            raise Conflict(
                f"job {job_id} has already finished ({previous}); "
                "only unfinished jobs can be cancelled"
            )
        return job

    def requeue_dead(self, job_id: str, message: tuple[str, str]) -> Job:
        """Put a dead job back to ``queued`` with fresh retries and push its ``message``
        (:class:`worker.message.MessageBuilder`), in one step. The last error stays on the
        record until the job starts again.
        """
        job, previous = self.transition(
            job_id,
            "queued",
            ("dead",),
            flags="q",
            push=message,
            progress=0,
            finished_at="",
            retries=0,
            deliveries=0,
        )
        if job is None:
            if previous is None:
                raise _not_found(job_id)
            raise Conflict(f"job {job_id} is {previous}, not dead: only dead jobs can be replayed")
        return job

    # -- the scheduled set (delays and retry backoff) ---------------------------------
    def claim_due(self, now: float, lease: float, limit: int = 100) -> tuple[list[str], float]:
        """Ids of scheduled jobs that are due, leased until ``now + lease``."""
        until = now + lease
        ids = self._claim(keys=[SCHEDULED_SET], args=[repr(now), repr(until), limit])
        return [text(i) for i in ids], until

    def release(self, job_id: str, lease_until: float) -> None:
        self._release(keys=[SCHEDULED_SET], args=[job_id, repr(lease_until)])

    def promote(self, job_id: str, lease_until: float, message: tuple[str, str]) -> bool:
        """Push the message of a job claimed until ``lease_until`` and take it off the
        schedule, atomically; False (and nothing pushed) when the claim is no longer the
        current one or the job no longer waits to run (cancelled, say; then it just leaves
        the schedule)."""
        list_key, entry = message
        keys = [SCHEDULED_SET, job_key(job_id), list_key]
        return bool(self._promote(keys=keys, args=[job_id, repr(lease_until), entry]))

    # -- dead letters and statistics --------------------------------------------------
    def dead(self, limit: int = 100) -> list[Job]:
        """Dead jobs, newest first; ids whose record expired are pruned on the way."""
        ids: list[bytes] = self.client.zrevrange(DEAD_SET, 0, max(0, limit - 1))  # type: ignore[assignment]
        pipe = self.client.pipeline(transaction=False)
        for raw in ids:
            pipe.hgetall(job_key(text(raw)))
        records = pipe.execute()
        gone = [raw for raw, record in zip(ids, records, strict=True) if not record]
        if gone:
            self.client.zrem(DEAD_SET, *gone)
        return [Job.from_hash(record) for record in records if record]

    def dead_count(self) -> int:
        return int(self.client.zcard(DEAD_SET))


class AsyncJobStore:
    """The part of :class:`JobStore` the API runs on its event loop (``redis.asyncio``).

    Each call, redis-py's retries included, is bounded by ``timeout`` seconds: the API's
    asyncio client has no socket timeout (event streams block on XREAD), and a request
    must not hang on a Redis that accepts connections but does not answer. Past it,
    :class:`redis.TimeoutError` (the API's 503), as the sync client's socket timeout
    gives. As with any timeout, a command may have run anyway.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        retention_seconds: int,
        timeout: float = 5.0,
        wait_aof: bool = False,
        max_queued: int = 0,
    ) -> None:
        self.client = client
        self.retention = retention_seconds
        self.timeout = timeout
        self.max_queued = max_queued
        # BGWORKER_ENQUEUE_FSYNC: a new job is answered only once Redis has fsynced it.
        self.wait_aof = wait_aof
        self._create = client.register_script(_CREATE)

    async def create(
        self,
        kind: str,
        args: Mapping[str, Any],
        queue: str,
        *,
        job_id: str | None = None,
        idempotency: str | None = None,
        due: float | None = None,
        message: tuple[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[Job, bool]:
        """:meth:`JobStore.create`, one round trip on the event loop."""
        call = _CreateCall(
            self.retention, kind, args, queue, job_id, idempotency, due, message, extra
        ).bounded(self.max_queued)
        async with self._bounded():
            if not self.wait_aof:
                reply = await self._create(keys=call.keys, args=call.argv)
            else:
                # WAITAOF waits for the writes of its own connection: one pipeline, so the
                # script and the wait share a connection (and a round trip).
                pipe = self.client.pipeline(transaction=False)
                await self._create(keys=call.keys, args=call.argv, client=pipe)
                # Within the call's bound, so a wait that runs out is told, not cut off.
                wait_ms = max(100, int((self.timeout - 1) * 1000))
                pipe.execute_command("WAITAOF", 1, 0, wait_ms)
                reply, (fsynced, _replicas) = await pipe.execute()
                if not fsynced:
                    raise redis.TimeoutError(
                        f"Redis did not fsync the new job within {self.timeout:g} s"
                    )
        return call.result(reply)

    async def find_idempotent(self, key: str) -> Job | None:
        """:meth:`JobStore.find_idempotent`."""
        async with self._bounded():
            job_id = await self.client.get(idempotency_key(key))
            if not job_id or not valid_id(text(job_id)):
                return None
            data = await self.client.hgetall(job_key(text(job_id)))
        return Job.from_hash(data) if data else None

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError as exc:
            raise redis.TimeoutError(f"no answer from Redis within {self.timeout:g} s") from exc


class _CreateCall:
    """The keys and arguments of one run of ``_CREATE``, and how to read its reply."""

    def __init__(
        self,
        retention: int,
        kind: str,
        args: Mapping[str, Any],
        queue: str,
        job_id: str | None,
        idempotency: str | None,
        due: float | None,
        message: tuple[str, str] | None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        job_id = job_id or new_id()
        self.queue = queue
        self.max_queued = 0
        record: dict[str, str] = {
            "id": job_id,
            "kind": kind,
            "state": "queued",
            "queue": queue,
            "args": json.dumps(dict(args), separators=(",", ":")),
            "progress": "0",
            "attempts": "0",
            "created_at": repr(time.time()),
        }
        if idempotency is not None:
            record["idempotency"] = idempotency
        record.update(extra or {})
        list_key, entry = message if message is not None else (queue, "")
        argv: list[Any] = [
            job_id,
            retention,
            repr(due) if due is not None else "",
            "1" if idempotency is not None else "0",
            job_key(""),
            entry,
            record["created_at"],
            0,  # the queue's bound: bounded()
        ]
        for name, value in record.items():
            argv += [name, value]
        self.record = record
        self.argv = argv
        self.keys = [
            idempotency_key(idempotency or ""),
            job_key(job_id),
            events_key(job_id),
            STATS_STATES,
            SCHEDULED_SET,
            list_key,
            ACTIVE_SET,
        ]

    def bounded(self, max_queued: int) -> _CreateCall:
        """Refuse the job (QueueFull) when its queue holds ``max_queued`` (0: no bound)."""
        self.max_queued = max_queued
        self.argv[7] = max_queued
        return self

    def result(self, reply: Any) -> tuple[Job, bool]:
        if not reply:
            return Job.from_hash(self.record), True
        same, raw = reply
        if same == 2:
            raise QueueFull(
                f"the {self.queue} queue holds {self.max_queued} waiting jobs already "
                "(BGWORKER_MAX_QUEUED_JOBS); retry later, once workers have taken some"
            )
        flat = json.loads(raw)
        job = Job.from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
        return job, bool(same)


def _not_found(job_id: str) -> NotFound:
    return NotFound(
        f"no job {job_id!r}: the id is wrong, or the record expired after its retention"
    )


def _encode(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _float_or_none(raw: str | None) -> float | None:
    return float(raw) if raw else None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"
