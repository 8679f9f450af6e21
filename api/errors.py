"""Every failure leaves the API as JSON ``{"error": {"code", "message"}}``, never a traceback."""

from __future__ import annotations

import logging
import math

import redis
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from worker.enqueue import BROKER_ERRORS
from worker.errors import BgworkerError, BrokerUnavailable, RateLimited

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


async def on_bgworker_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BgworkerError)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
    if exc.status == 401:  # RFC 6750: say which scheme to use
        headers = {"WWW-Authenticate": 'Bearer realm="bgworker"'}
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return error_response(exc.status, exc.code, exc.message, headers)


async def on_broker_error(request: Request, exc: Exception) -> Response:
    # The detail (Redis' address, its error text) is for the log, not for clients.
    log.warning("Redis unavailable while serving %s %s: %s", request.method, request.url.path, exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        message = (
            "the job broker is full, so no new job is accepted: retry later, once the "
            "workers have drained the queues (operators: Redis reached its maxmemory)"
        )
    else:
        message = "the job broker is unavailable; retry in a few seconds"
    return await on_bgworker_error(request, BrokerUnavailable(message))


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    headers = dict(exc.headers) if exc.headers else None
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error serving %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "unexpected server error; it has been logged")


HANDLERS = {
    BgworkerError: on_bgworker_error,
    HTTPException: on_http_error,
    **{cls: on_broker_error for cls in BROKER_ERRORS},
    Exception: on_unexpected,
}
