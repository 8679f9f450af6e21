"""``GET /v1/jobs/{id}/events``: a job's changes as Server-Sent Events, until it finishes.

Each event is the whole public record at that moment (``event: job``), read from the
job's Redis stream (waiting for changes is :mod:`api.event_hub`'s, one connection for
every stream of the process), whose entry ids are the SSE ids: a client that reconnects with
``Last-Event-ID`` resumes exactly where it left off. The first event is the current
record, so a subscriber never waits for a change to learn the state.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.auth import may_see
from api.context import ctx
from worker.auth import Principal
from worker.errors import InvalidRequest, NotFound
from worker.jobs import Job, events_key, job_key, text, valid_id

_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def _after(a: str, b: str) -> bool:
    """Whether stream id ``a`` is at or after ``b``."""
    ams, aseq = map(int, a.split("-"))
    bms, bseq = map(int, b.split("-"))
    return (ams, aseq) >= (bms, bseq)


def _event(entry_id: bytes, job: Job) -> bytes:
    data = json.dumps(job.public(), separators=(",", ":"))
    return b"id: %s\nevent: job\ndata: %s\n\n" % (entry_id, data.encode())


async def stream_events(request: Request, job_id: str, principal: Principal) -> Response:
    c = ctx(request)
    if not valid_id(job_id):
        raise NotFound(f"no job {job_id!r}")
    hub = c.events
    if hub.streams >= hub.limit:  # before the 200 goes out; subscribe() checks again
        raise hub.full()
    client = c.aredis  # the pool, for quick reads only: waiting is the hub's
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(job_key(job_id))
    pipe.xrevrange(events_key(job_id), count=1)
    record, last = await pipe.execute()  # both replies typed Any by redis-py
    if not record or not may_see(principal, Job.from_hash(record)):
        raise NotFound(f"no job {job_id!r}: the id is wrong, or the record expired")
    resume = request.headers.get("last-event-id")
    if resume is not None and not _STREAM_ID.fullmatch(resume):
        raise InvalidRequest(f"Last-Event-ID {resume!r} is not an id this stream sent")
    last_id = text(last[0][0]) if last else "0-0"
    if resume is not None and Job.from_hash(record).finished and _after(resume, last_id):
        # Everything was delivered, the last event included. 204 tells an EventSource
        # to stop reconnecting (an empty 200 would make it retry forever).
        return Response(status_code=204)
    keepalive = float(c.settings.sse_keepalive_seconds)
    lifetime = float(c.settings.event_stream_max_seconds)
    key = events_key(job_id)

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + lifetime
        if resume is None:
            cursor = last_id
            job = Job.from_hash(record)
            yield _event(last_id.encode(), job)
            if job.finished:
                return
        else:
            cursor = resume
            # What was missed, read at once; the hub takes over from the last of it.
            missed: Any = await client.xrange(key, min="(" + resume)
            for raw_id, fields in missed:
                cursor = text(raw_id)
                job = Job.from_hash(fields)
                yield _event(cursor.encode(), job)
                if job.finished:
                    return
        async with hub.subscribe(key, cursor) as sub:
            while (left := ends - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(sub.queue.get(), min(keepalive, left))
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if item is None:
                    return  # the hub stopped, or this client fell behind: it resumes
                entry_id, fields = item
                job = Job.from_hash(fields)
                yield _event(entry_id.encode(), job)
                if job.finished:
                    return
        # Past its lifetime the stream ends; an EventSource reconnects with Last-Event-ID
        # and misses nothing, and no connection is held for ever.

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
