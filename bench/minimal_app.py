"""The anchor of the enqueue benchmark: Starlette + uvicorn, one LPUSH per request.

Served exactly as ``bgworker api`` serves bgworker (same uvicorn.run arguments):
``python -m bench.minimal_app PORT``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from worker.settings import Settings


def create_app(settings: Settings) -> Starlette:
    client = aioredis.Redis.from_url(settings.redis_url)

    async def create_job(request: Request) -> JSONResponse:
        body = await request.body()
        job_id = uuid.uuid4().hex
        await client.lpush("default", body)
        return JSONResponse({"id": job_id, "state": "queued"}, status_code=202)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    return Starlette(routes=[Route("/v1/jobs", create_job, methods=["POST"])], lifespan=lifespan)


def main(port: int) -> None:
    import uvicorn

    settings = Settings.from_env()
    # The same arguments as worker.cli.cmd_api.
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        proxy_headers=True,
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(int(sys.argv[1]))
