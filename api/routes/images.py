"""``POST /v1/images`` and ``GET /v1/images/{id}/{width}``: uploads, thumbnails, placeholders."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from api import params, signing
from api.auth import may_see
from api.context import AppContext, ctx
from api.errors import error_response
from api.uploads import receive_upload
from worker import imaging
from worker.catalog import THUMBNAILS
from worker.enqueue import BROKER_ERRORS, submit_async
from worker.errors import Forbidden
from worker.jobs import Job, job_key, new_id, valid_id

IMMUTABLE = "public, max-age=31536000, immutable"
# A private job's thumbnail: the browser may keep it, shared caches (CDNs) may not.
PRIVATE = "private, max-age=86400, immutable"

log = logging.getLogger(__name__)


async def upload(request: Request) -> Response:
    c = ctx(request)
    principal = await c.auth.require(request, "jobs:write")
    settings = c.settings
    queue = params.priority(request.query_params.get("priority"))
    widths = params.widths(request.query_params.get("widths"), settings.thumbnail_widths)
    public = params.flag(request.query_params.get("public"), "public")
    key = params.scoped_key(principal, "images", params.idempotency_key(request))
    await c.quotas.check_memory()
    temp = await receive_upload(request, c.storage, settings.max_upload_bytes)
    job_id = new_id()
    original = c.storage.original(job_id)
    try:
        upload_digest = await run_in_threadpool(_file_digest, temp)
        digest = params.digest(
            {"upload": upload_digest, "widths": widths, "priority": queue, "public": public}
        )
        if key is not None:
            earlier = await c.jobs.find_idempotent(key)
            if earlier is not None:  # a retry: answered without storing the upload again
                params.same_request(earlier, digest, key)
                return _accepted(c, earlier)
        await run_in_threadpool(_probe_and_store, c, temp, original)
    finally:
        temp.unlink(missing_ok=True)
    extra = {"owner": principal.owner, "digest": digest, "public": "1" if public else "0"}
    try:
        job, created = await submit_async(
            c.jobs,
            c.celery,
            THUMBNAILS,
            {"widths": widths},
            queue,
            job_id=job_id,
            idempotency=key,
            extra=extra,
        )
    except BaseException:
        # The outcome is unknown (a timeout or a dropped connection: the script may have
        # run, and a retry with the same key then receives this job), so the original
        # stays until Redis can say whether the job exists: a job never loses its file.
        _keep_task(asyncio.create_task(_drop_if_no_job(c, job_id, original)))
        raise
    if not created:
        original.unlink(missing_ok=True)
        params.same_request(job, digest, key)
    return _accepted(c, job)


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


def _accepted(c: AppContext, job: Job) -> JSONResponse:
    widths = job.args.get("widths", [])
    if job.shared or not c.auth.required:
        thumbnails = {str(w): f"/v1/images/{job.id}/{w}" for w in widths}
    else:  # private: links an <img> can load without a header (when a key signs them)
        thumbnails = {str(w): signing.link(c.settings, job.id, w) for w in widths}
    return params.accepted(job, thumbnails=thumbnails)


async def thumbnail(request: Request) -> Response:
    c = ctx(request)
    job_id = request.path_params["id"]
    width = request.path_params["width"]
    if not valid_id(job_id):
        return _not_found(job_id)
    query = request.query_params
    signed = "sig" in query
    if signed and not signing.verify(
        c.settings, job_id, width, query.get("expires", ""), query.get("sig", "")
    ):
        raise Forbidden(
            "this thumbnail link has expired or is not valid; GET the job's record with "
            "your API key for fresh links"
        )
    # Only the owner (or a signed link, or a job created public) may see a thumbnail.
    cache = IMMUTABLE if not c.auth.required else PRIVATE
    path = c.storage.thumbnail(job_id, width)
    if signed and path.exists():
        return _file(request, path, cache)
    job = await run_in_threadpool(c.store.get, job_id)
    if job is None or job.kind != THUMBNAILS:
        return _not_found(job_id)
    if job.shared:
        cache = IMMUTABLE
    elif not signed and c.auth.required:
        principal = await c.auth.require(request, "jobs:read")
        if not may_see(principal, job):
            return _not_found(job_id)
    if path.exists():
        return _file(request, path, cache)
    if width not in job.args.get("widths", []):
        return error_response(
            404, "not_found", f"job {job_id} makes widths {job.args.get('widths')}, not {width}"
        )
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


def _file(request: Request, path: Path, cache: str) -> Response:
    response = FileResponse(
        path,
        media_type="image/webp",
        headers={"Cache-Control": cache},
        stat_result=os.stat(path),  # sets ETag now, so we can answer If-None-Match
    )
    etag = response.headers.get("etag")
    if etag and etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": cache})
    return response


def _not_found(job_id: str) -> Response:
    return error_response(404, "not_found", f"no image job {job_id!r}")


routes = [
    Route("/v1/images", upload, methods=["POST"]),
    Route("/v1/images/{id}/{width:int}", thumbnail, methods=["GET", "HEAD"]),
]
