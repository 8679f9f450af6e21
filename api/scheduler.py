"""Publishing delayed jobs and retries when they fall due, from inside the API.

The API runs the promoter because it is the one part that is always up: workers may be
scaled to zero, and a job that is due must reach its queue list for KEDA to see it and
start a worker. Several API replicas may promote at once (claims are leased in Redis).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from worker.celery_app import BgworkerCelery
from worker.enqueue import BROKER_ERRORS, promote_due
from worker.jobs import JobStore

log = logging.getLogger(__name__)

# Delays and retry backoffs are whole seconds; looking every second keeps them on time
# at the cost of one ZRANGE per second.
INTERVAL_SECONDS = 1.0


async def promote_forever(store: JobStore, celery: BgworkerCelery) -> None:
    failing = False
    while True:
        try:
            count = await run_in_threadpool(promote_due, store, celery)
        except BROKER_ERRORS as exc:
            if not failing:
                log.warning("cannot promote due jobs, Redis unreachable: %s", exc)
            failing = True
        except Exception:
            log.exception("promoting due jobs failed")
        else:
            if failing:
                log.info("promoting due jobs again")
            failing = False
            if count:
                log.info("published %d due job(s)", count)
        await asyncio.sleep(INTERVAL_SECONDS)
