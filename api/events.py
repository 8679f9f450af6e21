"""``GET /v1/jobs/{id}/events``: a job's changes as Server-Sent Events, until it finishes.

Each event is the whole public record at that moment (``event: job``), read from the
job's Redis stream, whose entry ids are the SSE ids: a client that reconnects with
``Last-Event-ID`` resumes exactly where it left off. The first event is the current
record, so a subscriber never waits for a change to learn the state.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.context import ctx
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


async def stream_events(request: Request, job_id: str) -> Response:
    c = ctx(request)
    if not valid_id(job_id):
        raise NotFound(f"no job {job_id!r}")
    client = c.aredis
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(job_key(job_id))
    pipe.xrevrange(events_key(job_id), count=1)
    record, last = await pipe.execute()  # both replies typed Any by redis-py
    if not record:
        raise NotFound(f"no job {job_id!r}: the id is wrong, or the record expired")
    resume = request.headers.get("last-event-id")
    if resume is not None and not _STREAM_ID.fullmatch(resume):
        raise InvalidRequest(f"Last-Event-ID {resume!r} is not an id this stream sent")
    last_id = text(last[0][0]) if last else "0-0"
    if resume is not None and Job.from_hash(record).finished and _after(resume, last_id):
        # Everything was delivered, the last event included. 204 tells an EventSource
        # to stop reconnecting (an empty 200 would make it retry forever).
        return Response(status_code=204)
    keepalive_ms = c.settings.sse_keepalive_seconds * 1000

    async def events() -> AsyncIterator[bytes]:
        cursor: bytes | str
        if resume is not None:
            cursor = resume
        else:
            cursor = last_id
            job = Job.from_hash(record)
            yield _event(last_id.encode(), job)
            if job.finished:
                return
        while True:
            reply: Any = await client.xread({events_key(job_id): cursor}, block=keepalive_ms)
            if not reply:
                if await request.is_disconnected():
                    return
                yield b": keepalive\n\n"
                continue
            for entry_id, fields in reply[0][1]:
                cursor = entry_id
                job = Job.from_hash(fields)
                yield _event(entry_id, job)
                if job.finished:
                    return

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
