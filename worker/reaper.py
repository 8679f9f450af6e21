"""Finding unfinished jobs whose message exists nowhere, and queueing them again.

kombu's Redis transport takes a message with BRPOP and records it in its ``unacked``
hash only in a second round trip. Between the two the message exists only in a socket
or a worker's memory: a Redis that is killed (or even shut down cleanly) right after the
pop, a worker that dies while Redis serves its blocked BRPOP, or a ``maxmemory`` that
refuses the registration loses it, and its job would stay ``queued`` for ever. No
maintained transport makes that step atomic for several lists in priority order (BLMOVE
takes one list; a Lua script cannot block), so rather than fork kombu's event loop we
find the jobs it loses, from outside, and queue them again.

Every unfinished job is in the active set (:data:`worker.jobs.ACTIVE_SET`, kept by the
job scripts). A job's message is in exactly one place at any moment: its queue's list,
the ``unacked`` hash (taken, running), the scheduled set (a delay or a retry backoff: no
message yet), or in transit between list and hash for a round trip. Each pass:

1. compares, in one script, the number of active jobs with the number of messages and
   scheduled entries. While nothing is missing that costs one round trip;
2. if fewer places than jobs, reads which job ids the lists and ``unacked`` hold (in
   pages) and notes the active jobs found nowhere;
3. a job noted in two passes in a row (so it was not merely in transit) is queued again
   by :data:`_REQUEUE_LOST`, which checks the absence once more, atomically, and pushes a
   fresh message only then.

A message that sat in transit for a whole pass interval (a worker frozen between its
BRPOP and the registration) would run twice: the job record keeps one outcome (a finished
job is never moved back), as with any redelivery.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from worker.jobs import (
    ACTIVE_SET,
    EVENTS_MAXLEN,
    SCHEDULED_SET,
    STATS_STATES,
    JobStore,
    events_key,
    job_key,
    text,
)
from worker.message import message_builder
from worker.queues import QUEUES, UNACKED_HASH

log = logging.getLogger(__name__)

# Where the messages of one job are, as kombu writes them (json.dumps' separators): the
# task id in the headers. "root_id", "parent_id" and "correlation_id" also hold ids, but
# end in `_id"`, so they never match; kwargsrepr is a JSON string, its quotes escaped.
# tests/worker/test_reaper.py holds this to real messages, also restored ones.
_ID_IN_MESSAGE = re.compile(rb'"id": "([0-9a-f]{32})"')
PAGE = 1000
STATS_REAPED = "bgworker:stats:reaped"

# Active jobs against the places a job can be: 1 round trip while nothing is lost.
# KEYS: active set, scheduled set, unacked hash, the queue lists.  Returns the difference.
_MISSING = """
local places = redis.call('ZCARD', KEYS[2]) + redis.call('HLEN', KEYS[3])
for i = 4, #KEYS do places = places + redis.call('LLEN', KEYS[i]) end
return redis.call('ZCARD', KEYS[1]) - places
"""

# Queue a lost job again, only if its message is still nowhere: the job is unfinished and
# not scheduled, no unacked message and no entry of its queue's list names it. The scan of
# the list is O(its length), paid only for a job already seen lost in two passes.
# KEYS: job hash, events stream, state stats, scheduled set, unacked hash, queue list,
#       active set, reaped stats
# ARGV: job id, message, ttl, now, page size
# Returns 1 when the message was pushed, 0 when the job is not lost (or not unfinished).
_REQUEUE_LOST = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' and state ~= 'retrying' then return 0 end
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 0 end
local needle = '"id": "' .. ARGV[1] .. '"'
for _, entry in ipairs(redis.call('HVALS', KEYS[5])) do
  if string.find(entry, needle, 1, true) then return 0 end
end
local length = redis.call('LLEN', KEYS[6])
local page = tonumber(ARGV[5])
for start = 0, length - 1, page do
  for _, entry in ipairs(redis.call('LRANGE', KEYS[6], start, start + page - 1)) do
    if string.find(entry, needle, 1, true) then return 0 end
  end
end
redis.call('LPUSH', KEYS[6], ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'queued', 'progress', '0')
if state ~= 'queued' then redis.call('HINCRBY', KEYS[3], 'queued', 1) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', $MAXLEN, '*', unpack(redis.call('HGETALL', KEYS[1])))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[7], ARGV[4], ARGV[1])
redis.call('INCR', KEYS[8])
return 1
""".replace("$MAXLEN", str(EVENTS_MAXLEN))


@dataclass
class Reaper:
    """One per API process (several API replicas may run one each: the final check and
    the push are one script, so a job is never queued twice by two reapers)."""

    store: JobStore
    celery: Celery
    # Jobs found nowhere in the last pass: id -> when first seen so.
    suspects: dict[str, float] = field(default_factory=dict)
    # Whether the last pass's count came up short: a message in transit makes one count
    # short now and then under load, so only two in a row cost a scan.
    short: bool = False

    def __post_init__(self) -> None:
        client = self.store.client
        self._missing = client.register_script(_MISSING)
        self._requeue = client.register_script(_REQUEUE_LOST)

    @property
    def client(self) -> redis.Redis:
        return self.store.client

    def missing(self) -> int:
        """Active jobs minus the places a job can be; above 0, some message is missing."""
        keys = [ACTIVE_SET, SCHEDULED_SET, UNACKED_HASH, *QUEUES]
        return int(self._missing(keys=keys))

    def run_once(self) -> list[str]:
        """One pass; returns the ids of the jobs it queued again."""
        if self.missing() <= 0:
            self.suspects.clear()
            self.short = False
            return []
        if not self.short and not self.suspects:
            self.short = True
            return []
        lost = self._find_lost()
        confirmed = [job_id for job_id in lost if job_id in self.suspects]
        now = time.time()
        self.suspects = {job_id: self.suspects.get(job_id, now) for job_id in lost}
        requeued = [job_id for job_id in confirmed if self._requeue_lost(job_id)]
        for job_id in requeued:
            self.suspects.pop(job_id, None)
        return requeued

    def _find_lost(self) -> set[str]:
        """Active jobs that are in no list, not unacked and not scheduled (non-atomic
        reads: a job in transit between list and ``unacked`` may show up here)."""
        active = _members(self.client.zrange(ACTIVE_SET, 0, -1))
        if not active:
            return set()
        # Scheduled and unacked first, lists last: a message moves list -> unacked only by
        # a pop (in transit meanwhile), and back only in one transaction, so reading in
        # this order can miss a message only while it is in transit.
        present = _members(self.client.zrange(SCHEDULED_SET, 0, -1))
        present |= _ids_in(self.client.hvals(UNACKED_HASH))  # type: ignore[arg-type]
        for queue in QUEUES:
            start = 0
            while page := self.client.lrange(queue, start, start + PAGE - 1):
                present |= _ids_in(page)  # type: ignore[arg-type]
                start += PAGE
        candidates = active - present
        if not candidates:
            return set()
        # Drop from the index jobs whose record expired (retention) or already finished.
        ordered = sorted(candidates)
        pipe = self.client.pipeline(transaction=False)
        for job_id in ordered:
            pipe.hget(job_key(job_id), "state")
        states = pipe.execute()
        gone = [i for i, state in zip(ordered, states, strict=True) if state is None]
        if gone:
            self.client.zrem(ACTIVE_SET, *gone)
        # "retrying" too: once the promoter has pushed its retry, the job is out of the
        # schedule but stays "retrying" until a worker starts it, and that message can be
        # lost in transit like any other.
        unfinished = {b"queued", b"running", b"retrying"}
        return {i for i, state in zip(ordered, states, strict=True) if state in unfinished}

    def _requeue_lost(self, job_id: str) -> bool:
        job = self.store.get(job_id)
        if job is None or job.state not in ("queued", "running", "retrying"):
            return False
        list_key, entry = message_builder(self.celery).build(
            job.id, job.kind, job.args, job.queue, time.time()
        )
        keys = [
            job_key(job_id),
            events_key(job_id),
            STATS_STATES,
            SCHEDULED_SET,
            UNACKED_HASH,
            list_key,
            ACTIVE_SET,
            STATS_REAPED,
        ]
        argv: list[str | int] = [job_id, entry, self.store.retention, repr(time.time()), PAGE]
        if not self._requeue(keys=keys, args=argv):
            return False
        log.warning(
            "job %s (%s) was %s but its message was in no queue and not taken by any "
            "worker (lost in transit: Redis or a worker died as it was fetched); queued it "
            "again",
            job_id,
            job.kind,
            job.state,
        )
        return True


def _members(raw: Any) -> set[str]:
    return {text(member) for member in raw}


def _ids_in(messages: Iterable[bytes]) -> set[str]:
    found: set[str] = set()
    for raw in messages:
        match = _ID_IN_MESSAGE.search(raw)
        if match is not None:
            found.add(match.group(1).decode())
    return found
