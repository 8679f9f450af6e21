"""One Redis connection per API process for every event stream, fanned out to clients.

An event stream waits for a job's next change. Holding one pooled connection per stream
in a blocking XREAD let ~100 idle streams take every connection of the pool, and with
them readiness and every enqueue (503). Here one task per process reads all watched job
streams with a single ``XREAD BLOCK`` on a connection of its own and hands each entry to
the subscribers of that job; a new subscription wakes the blocked read (``CLIENT
UNBLOCK``) so that it joins the next one at once. Streams cost the API no pooled
connection, and their number is capped (:class:`StreamsFull`, 503 with Retry-After).

No maintained library fans one Redis connection out to many asyncio consumers of
streams (redis-py's pub/sub does it for channels, which do not keep history, and a job's
history is what a reconnecting client resumes from), hence this small module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from worker.enqueue import BROKER_ERRORS
from worker.errors import BgworkerError
from worker.jobs import text

log = logging.getLogger(__name__)

# How long one XREAD blocks before it is sent again; new subscriptions interrupt it.
BLOCK_MS = 5000
RETRY_SECONDS = 1.0
# Entries a subscriber may have waiting before it is cut off (a client that does not
# read its stream must not hold the API's memory).
SUBSCRIBER_BACKLOG = 256


class StreamsFull(BgworkerError):
    status = 503
    code = "too_many_streams"


@dataclass(eq=False)
class Subscription:
    key: str
    cursor: str  # the last entry id this subscriber has (entries after it are sent)
    queue: asyncio.Queue[tuple[str, dict[Any, Any]] | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_BACKLOG)
    )


class EventHub:
    """Start with :meth:`start` in the lifespan, :meth:`close` at its end."""

    def __init__(self, client: aioredis.Redis, limit: int) -> None:
        # Its own client: one connection blocks in XREAD (no socket timeout), a second
        # sends CLIENT UNBLOCK.
        self._client = client
        self._limit = limit
        self._subs: dict[str, set[Subscription]] = {}
        self._count = 0
        self._changed = asyncio.Event()
        self._reader_id: int | None = None
        self._blocked = False
        self._task: asyncio.Task[None] | None = None

    @property
    def streams(self) -> int:
        return self._count

    @property
    def limit(self) -> int:
        return self._limit

    def full(self) -> StreamsFull:
        return StreamsFull(
            f"this API process serves {self._limit} event streams already "
            "(BGWORKER_MAX_EVENT_STREAMS); retry later, or poll GET /v1/jobs/{id}"
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bgworker-event-hub")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for subs in self._subs.values():
            for sub in subs:
                _offer(sub, None)
        await self._client.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, key: str, cursor: str) -> AsyncIterator[Subscription]:
        """Entries of stream ``key`` after ``cursor``, on the subscription's queue (None: the
        hub stopped, or the subscriber fell too far behind)."""
        if self._count >= self._limit:
            raise self.full()
        sub = Subscription(key, cursor)
        self._subs.setdefault(key, set()).add(sub)
        self._count += 1
        self._wake()
        try:
            yield sub
        finally:
            self._count -= 1
            subs = self._subs.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[key]

    def _wake(self) -> None:
        self._changed.set()
        if self._blocked and self._reader_id is not None:
            # Interrupt the XREAD in progress so the new stream joins the next one.
            task = asyncio.create_task(self._unblock(self._reader_id))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _unblock(self, reader_id: int) -> None:
        with contextlib.suppress(*BROKER_ERRORS):
            await self._client.client_unblock(reader_id, error=False)

    async def _run(self) -> None:
        failing = False
        while True:
            if not self._subs:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                async with self._client.client() as conn:  # a dedicated connection
                    self._reader_id = int(await conn.client_id())
                    while self._subs:
                        await self._read_once(conn)
                        failing = False
            except BROKER_ERRORS as exc:
                if not failing:
                    log.warning("event streams: Redis unreachable (%s); retrying", exc)
                failing = True
                self._blocked = False
                await asyncio.sleep(RETRY_SECONDS)

    async def _read_once(self, conn: aioredis.Redis) -> None:
        cursors = {key: _min_cursor(subs) for key, subs in self._subs.items()}
        self._changed.clear()
        self._blocked = True
        try:
            reply: Any = await conn.xread(cursors, block=BLOCK_MS)  # type: ignore[arg-type]
        finally:
            self._blocked = False
        for raw_key, entries in reply or []:
            key = text(raw_key)
            for sub in list(self._subs.get(key, ())):
                for raw_id, fields in entries:
                    entry_id = text(raw_id)
                    if _after(entry_id, sub.cursor):
                        sub.cursor = entry_id
                        if not _offer(sub, (entry_id, fields)):
                            break


def _offer(sub: Subscription, item: tuple[str, dict[Any, Any]] | None) -> bool:
    try:
        sub.queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        # Too far behind: end its stream (it resumes with Last-Event-ID, losing nothing).
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        return False


def _ids(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _after(a: str, b: str) -> bool:
    """Whether stream id ``a`` comes strictly after ``b``."""
    return _ids(a) > _ids(b)


def _min_cursor(subs: set[Subscription]) -> str:
    return min((s.cursor for s in subs), key=_ids)
