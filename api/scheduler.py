"""Background loops of the API: publishing due jobs, queueing lost ones again, and the
storage janitor (files whose job record has gone).

The API runs them because it is the one part that is always up: workers may be scaled to
zero, and a job that is due (or whose message was lost) must reach its queue list for
KEDA to see it and start a worker. Several API replicas may run them at once: claims are
leased in Redis, and the reaper's final check and push are one script.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool

from worker.celery_app import BgworkerCelery
from worker.enqueue import BROKER_ERRORS, promote_due
from worker.janitor import Janitor
from worker.jobs import JobStore
from worker.reaper import Reaper
from worker.storage import Storage

log = logging.getLogger(__name__)

# Delays and retry backoffs are whole seconds; looking every second keeps them on time
# at the cost of one ZRANGE per second.
INTERVAL_SECONDS = 1.0


async def promote_forever(store: JobStore, celery: BgworkerCelery) -> None:
    def promote() -> int:
        return promote_due(store, celery)

    await _forever(promote, INTERVAL_SECONDS, "promote due jobs", "published %d due job(s)")


async def reap_forever(store: JobStore, celery: BgworkerCelery) -> None:
    """Every restore interval (the pace at which kombu restores expired messages too):
    one count while nothing is lost, and a lost message is queued again within about
    three intervals."""
    reaper = Reaper(store, celery)

    def reap() -> int:
        return len(reaper.run_once())

    interval = float(celery.settings.restore_interval)
    await _forever(reap, interval, "look for lost jobs", "queued %d lost job(s) again")


async def janitor_forever(store: JobStore, storage: Storage, celery: BgworkerCelery) -> None:
    """Every janitor interval, a bounded batch of storage entries: files whose job record
    has expired, or that a crash left behind (worker/janitor.py)."""
    settings = celery.settings
    janitor = Janitor(storage, store.client, settings.storage_grace_seconds)
    interval = float(settings.janitor_interval_seconds)
    await _forever(janitor.run_once, interval, "clean storage", "removed %d orphaned file(s)")


async def _forever(step: Callable[[], int], interval: float, what: str, done: str) -> None:
    failing = False
    while True:
        try:
            count = await run_in_threadpool(step)
        except BROKER_ERRORS as exc:
            if not failing:
                log.warning("cannot %s, Redis unreachable: %s", what, exc)
            failing = True
        except Exception:
            log.exception("%s failed", what)
        else:
            if failing:
                log.info("can %s again", what)
            failing = False
            if count:
                log.info(done, count)
        await asyncio.sleep(interval)
