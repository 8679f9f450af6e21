"""Health, readiness, metrics and queue depths: what probes, Prometheus and operators read."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.context import ctx
from api.errors import RETRY_AFTER_SECONDS, error_response
from worker.enqueue import BROKER_ERRORS
from worker.queues import report

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await ctx(request).aredis.ping()
    except BROKER_ERRORS as exc:
        log.warning("not ready: Redis unreachable: %s", exc)  # the detail stays in the log
        return error_response(
            503,
            "broker_unavailable",
            "the job broker is unavailable",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    await ctx(request).auth.require(request, "admin")
    body = await run_in_threadpool(generate_latest, ctx(request).metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def queues(request: Request) -> Response:
    await ctx(request).auth.require(request, "admin")
    return JSONResponse(await run_in_threadpool(report, ctx(request).redis))


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v1/queues", queues, methods=["GET"]),
]
