"""``POST /v1/images`` and ``GET /v1/images/{id}/{width}``: uploads, thumbnails, placeholders."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from api import params
from api.context import AppContext, ctx
from api.errors import error_response
from api.uploads import receive_upload
from worker import imaging
from worker.catalog import THUMBNAILS
from worker.enqueue import BROKER_ERRORS, submit_async
from worker.jobs import Job, job_key, new_id, valid_id

IMMUTABLE = "public, max-age=31536000, immutable"

log = logging.getLogger(__name__)


async def upload(request: Request) -> Response:
    c = ctx(request)
    settings = c.settings
    queue = params.priority(request.query_params.get("priority"))
    widths = params.widths(request.query_params.get("widths"), settings.thumbnail_widths)
    key = params.idempotency_key(request)
    if key is not None:
        earlier = await c.jobs.find_idempotent(key)
        if earlier is not None:
            return _accepted(earlier)
    temp = await receive_upload(request, c.storage, settings.max_upload_bytes)
    job_id = new_id()
    original = c.storage.original(job_id)
    try:
        await run_in_threadpool(_probe_and_store, c, temp, original)
    finally:
        temp.unlink(missing_ok=True)
    try:
        job, created = await submit_async(
            c.jobs, c.celery, THUMBNAILS, {"widths": widths}, queue, job_id=job_id, idempotency=key
        )
    except BaseException:
        # The outcome is unknown (a timeout or a dropped connection: the script may have
        # run, and a retry with the same key then receives this job), so the original
        # stays until Redis can say whether the job exists: a job never loses its file.
        _keep_task(asyncio.create_task(_drop_if_no_job(c, job_id, original)))
        raise
    if not created:
        original.unlink(missing_ok=True)
    return _accepted(job)


# Background checks of uploads whose enqueue failed (asyncio keeps only weak references).
_PENDING: set[asyncio.Task[None]] = set()
ORPHAN_CHECK_SECONDS = 2.0
ORPHAN_CHECK_FOR_SECONDS = 3600.0


def _keep_task(task: asyncio.Task[None]) -> None:
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


async def _drop_if_no_job(c: AppContext, job_id: str, original: Path) -> None:
    """Delete ``original`` once Redis answers that its job was never created.

    Asked seconds later on another connection: by then a script whose reply was lost has
    run or never will (its connection is gone), so "no record" means no job refers to
    the file. With Redis away for longer than an hour the file stays (logged).
    """
    deadline = time.monotonic() + ORPHAN_CHECK_FOR_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(ORPHAN_CHECK_SECONDS)
        try:
            async with asyncio.timeout(5):
                exists = await c.aredis.exists(job_key(job_id))
        except TimeoutError:
            continue
        except BROKER_ERRORS:
            continue
        if not exists:
            original.unlink(missing_ok=True)
        return
    log.warning("job %s: Redis unreachable for an hour; its upload stays at %s", job_id, original)


def _probe_and_store(c: AppContext, temp: Path, original: Path) -> None:
    imaging.probe(temp, c.settings.max_pixels)
    # The original is in place before the message exists: a worker never races the file.
    c.storage.publish(temp, original)


def _accepted(job: Job) -> JSONResponse:
    widths = job.args.get("widths", [])
    thumbnails = {str(w): f"/v1/images/{job.id}/{w}" for w in widths}
    return params.accepted(job, thumbnails=thumbnails)


async def thumbnail(request: Request) -> Response:
    c = ctx(request)
    job_id = request.path_params["id"]
    width = request.path_params["width"]
    if not valid_id(job_id):
        return _not_found(job_id)
    path = c.storage.thumbnail(job_id, width)
    if path.exists():
        return _file(request, path)
    job = await run_in_threadpool(c.store.get, job_id)
    if job is None or job.kind != THUMBNAILS:
        return _not_found(job_id)
    if width not in job.args.get("widths", []):
        return error_response(
            404, "not_found", f"job {job_id} makes widths {job.args.get('widths')}, not {width}"
        )
    if path.exists():  # finished between our two looks
        return _file(request, path)
    if job.finished:
        reason = f": {job.error['message']}" if job.error else ""
        return error_response(
            404, "thumbnail_unavailable", f"job {job_id} ended {job.state}{reason}"
        )
    return Response(
        imaging.placeholder(width),
        202,
        media_type="image/webp",
        headers={
            "Cache-Control": "no-store",
            "Retry-After": str(c.settings.retry_after_seconds),
        },
    )


def _file(request: Request, path: Path) -> Response:
    response = FileResponse(
        path,
        media_type="image/webp",
        headers={"Cache-Control": IMMUTABLE},
        stat_result=os.stat(path),  # sets ETag now, so we can answer If-None-Match
    )
    etag = response.headers.get("etag")
    if etag and etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})
    return response


def _not_found(job_id: str) -> Response:
    return error_response(404, "not_found", f"no image job {job_id!r}")


routes = [
    Route("/v1/images", upload, methods=["POST"]),
    Route("/v1/images/{id}/{width:int}", thumbnail, methods=["GET", "HEAD"]),
]
