"""``GET /v1/jobs/{id}/events``: a job's changes as Server-Sent Events, until it finishes.

Each event is the whole public record at that moment (``event: job``), read from the
job's Redis stream, whose entry ids are the SSE ids: a client that reconnects with
``Last-Event-ID`` resumes exactly where it left off. The first event is the current
record, so a subscriber never waits for a change to learn the state.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.context import ctx
from worker.errors import NotFound
from worker.jobs import Job, events_key, job_key, valid_id


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
    keepalive_ms = c.settings.sse_keepalive_seconds * 1000

    async def events() -> AsyncIterator[bytes]:
        cursor: bytes | str
        if resume:
            cursor = resume
        else:
            cursor = last[0][0] if last else b"0-0"
            job = Job.from_hash(record)
            yield _event(cursor if isinstance(cursor, bytes) else cursor.encode(), job)
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
