"""Clients shared by every request, created in the lifespan and reached through typed state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request

from api import event_hub
from api.auth import Authenticator
from api.event_hub import EventHub
from api.metrics import RedisCollector
from api.quotas import Quotas
from api.scheduler import janitor_forever, promote_forever, reap_forever
from worker import redis_client
from worker.celery_app import BgworkerCelery, create_celery
from worker.errors import SettingsError
from worker.jobs import AsyncJobStore, JobStore
from worker.message import message_builder
from worker.settings import Settings
from worker.storage import Storage

log = logging.getLogger(__name__)

# Connections of the API's asyncio pool. Requests hold one for a round trip (event
# streams wait on the hub's own connection), so a hundred serve thousands of requests/s.
ASYNC_POOL_SIZE = 100


@dataclass
class AppContext:
    settings: Settings
    redis: redis.Redis  # used from the thread pool (job records, metrics, the promoter)
    aredis: aioredis.Redis  # used on the event loop (new jobs, event streams, readiness)
    store: JobStore
    jobs: AsyncJobStore  # creating jobs on the event loop (one script each)
    celery: BgworkerCelery
    storage: Storage
    metrics: CollectorRegistry
    events: EventHub  # every event stream of this process, on one connection
    auth: Authenticator  # who each request acts as (its API key)
    quotas: Quotas  # what one key may consume, and room in Redis for new jobs


async def check_wait_aof(client: aioredis.Redis) -> None:
    """BGWORKER_ENQUEUE_FSYNC needs WAITAOF (Redis >= 7.2, Valkey) and an append-only file:
    refuse to start without them, rather than fail every enqueue. An unreachable Redis is
    no reason to refuse (it may come later); the first enqueue then says what is wrong."""
    try:
        await client.execute_command("WAITAOF", 0, 0, 0)  # type: ignore[no-untyped-call]
        await client.execute_command("WAITAOF", 1, 0, 100)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        raise SettingsError(
            "BGWORKER_ENQUEUE_FSYNC=1 needs a Redis that has WAITAOF (Redis 7.2 or newer, or "
            f"Valkey) running with appendonly yes; this one answered: {exc}"
        ) from None
    except (redis.ConnectionError, redis.TimeoutError):
        log.warning("cannot check BGWORKER_ENQUEUE_FSYNC now: Redis is unreachable")


def ctx(request: Request) -> AppContext:
    context: AppContext = request.state.ctx
    return context


Lifespan = Callable[[Starlette], AbstractAsyncContextManager[dict[str, AppContext]]]


def lifespan_for(settings: Settings) -> Lifespan:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, AppContext]]:
        # Short timeouts: with Redis down, a request must fail fast with 503, not hang.
        sync_client = redis_client.sync_client(
            settings,
            socket_connect_timeout=1,
            socket_timeout=5,
            health_check_interval=30,
        )
        async_client = redis_client.async_client(
            settings,
            # A burst of requests waits for a connection rather than failing with 503.
            pool_size=ASYNC_POOL_SIZE,
            socket_connect_timeout=1,
            health_check_interval=30,
        )
        if settings.enqueue_fsync:
            await check_wait_aof(async_client)
        quotas = Quotas(settings, async_client)
        storage = Storage(settings.storage_dir)
        storage.ensure()
        celery = create_celery(settings)
        message_builder(celery)  # made now rather than by the first request
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RedisCollector(sync_client))
        context = AppContext(
            settings=settings,
            redis=sync_client,
            aredis=async_client,
            store=JobStore(sync_client, settings.job_retention_seconds),
            jobs=AsyncJobStore(
                async_client,
                settings.job_retention_seconds,
                wait_aof=settings.enqueue_fsync,
                max_queued=settings.max_queued_jobs,
            ),
            celery=celery,
            storage=storage,
            metrics=registry,
            events=EventHub(
                # No read timeout shorter than its XREAD's block (redis-py's default is 5 s).
                redis_client.async_client(
                    settings,
                    pool_size=2,
                    socket_connect_timeout=1,
                    socket_timeout=event_hub.BLOCK_MS / 1000 + 5,
                ),
                settings.max_event_streams,
            ),
            auth=Authenticator(settings, async_client, quotas),
            quotas=quotas,
        )
        context.events.start()
        loops = [
            asyncio.create_task(promote_forever(context.store, celery)),
            asyncio.create_task(reap_forever(context.store, celery)),
            asyncio.create_task(janitor_forever(context.store, storage, celery)),
        ]
        # Everything imported and built so far lives as long as the process: move it out of
        # the collector's sight. Each full collection otherwise walks these hundreds of
        # thousands of objects (Celery, kombu, Starlette), ~30 ms with the event loop
        # stopped, about once a second under load: that was the enqueue's p99.
        gc.collect()
        gc.freeze()
        try:
            yield {"ctx": context}
        finally:
            for loop in loops:
                loop.cancel()
            for loop in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            await context.events.close()
            await async_client.aclose()
            sync_client.close()
            celery.close()
            gc.unfreeze()  # an app made again in this process (tests) freezes afresh

    return lifespan
