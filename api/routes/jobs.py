"""Generic jobs, job records, cancellation and the dead-letter set."""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import params
from api.context import ctx
from api.events import stream_events
from api.uploads import limited
from worker import catalog
from worker.enqueue import replay_dead, submit_async
from worker.errors import InvalidRequest, UploadTooLarge

MAX_JOB_BODY = 64 * 1024
TOO_LARGE = UploadTooLarge(
    f"a job request is at most {MAX_JOB_BODY} bytes of JSON; pass large inputs by reference"
)


async def create_job(request: Request) -> Response:
    c = ctx(request)
    principal = await c.auth.require(request, "jobs:write")
    key = params.idempotency_key(request)
    try:
        body = json.loads(await limited(request, MAX_JOB_BODY, TOO_LARGE).body())
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidRequest(f"body must be a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest('body must be a JSON object like {"task": "debug.sleep", "args": {}}')
    unknown = sorted(set(body) - {"task", "args", "priority", "delay_seconds"})
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) {unknown}; allowed: task, args, priority, delay_seconds"
        )
    task, args = body.get("task"), body.get("args", {})
    if not isinstance(task, str):
        raise InvalidRequest("'task' must be the name of a registered task")
    if not isinstance(args, dict):
        raise InvalidRequest("'args' must be a JSON object")
    queue = params.priority(body.get("priority"))
    delay = _delay(body.get("delay_seconds", 0), c.settings.max_delay_seconds)
    clean_args = catalog.validate(task, args, c.settings)
    await c.quotas.check_memory()
    digest = params.digest(
        {"task": task, "args": clean_args, "priority": queue, "delay_seconds": delay}
    )
    job, created = await submit_async(
        c.jobs,
        c.celery,
        task,
        clean_args,
        queue,
        countdown=delay,
        idempotency=params.scoped_key(principal, "jobs", key),
        extra={"owner": principal.owner, "digest": digest},
    )
    if not created:
        params.same_request(job, digest, key)
    return params.accepted(job)


def _delay(value: Any, maximum: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= maximum:
        raise InvalidRequest(
            f"delay_seconds must be a number from 0 to {maximum} (BGWORKER_MAX_DELAY_SECONDS)"
        )
    return float(value)


async def get_job(request: Request) -> Response:
    c = ctx(request)
    principal = await c.auth.require(request, "jobs:read")
    job = await run_in_threadpool(c.store.require, params.job_id(request))
    params.check_owner(principal, job)
    return JSONResponse(job.public())


async def cancel_job(request: Request) -> Response:
    c = ctx(request)
    principal = await c.auth.require(request, "jobs:write")
    job_id = params.job_id(request)
    params.check_owner(principal, await run_in_threadpool(c.store.require, job_id))
    job = await run_in_threadpool(c.store.cancel, job_id)
    return JSONResponse(job.public())


async def job_events(request: Request) -> Response:
    principal = await ctx(request).auth.require(request, "jobs:read")
    return await stream_events(request, params.job_id(request), principal)


async def list_dead(request: Request) -> Response:
    await ctx(request).auth.require(request, "admin")
    raw = request.query_params.get("limit", "100")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000")
    store = ctx(request).store
    jobs = await run_in_threadpool(store.dead, int(raw))
    total = await run_in_threadpool(store.dead_count)
    return JSONResponse({"count": total, "jobs": [_dead_view(j) for j in jobs]})


def _dead_view(job: Any) -> dict[str, Any]:
    return {**job.public(), "queue": job.queue, "args": job.args}


async def retry_dead(request: Request) -> Response:
    c = ctx(request)
    await c.auth.require(request, "admin")
    job = await run_in_threadpool(replay_dead, c.store, c.celery, params.job_id(request))
    return params.accepted(job)


routes = [
    Route("/v1/jobs", create_job, methods=["POST"]),
    Route("/v1/jobs/{id}", get_job, methods=["GET"]),
    Route("/v1/jobs/{id}", cancel_job, methods=["DELETE"]),
    Route("/v1/jobs/{id}/events", job_events, methods=["GET"]),
    Route("/v1/dead", list_dead, methods=["GET"]),
    Route("/v1/dead/{id}/retry", retry_dead, methods=["POST"]),
]
