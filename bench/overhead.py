"""Benchmark 2: no-op jobs through bgworker's worker against bare Celery, same settings.

N messages are queued while no worker runs; then one worker process (concurrency 1 or 2)
starts, and the rate is N over the time from its first take (the queue's length drops)
until the queue and kombu's unacked hash are both empty. bgworker's jobs are real jobs
(record, running/succeeded transitions, events, duration histogram); the anchor's are
plain Celery tasks. Variants alternate within each round.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import Process, Stat, log, wait_for
from worker.catalog import DEBUG_NOOP
from worker.celery_app import create_celery
from worker.enqueue import submit
from worker.jobs import STATS_STATES, JobStore
from worker.settings import Settings

VARIANTS = ("bgworker", "bare")
QUEUE = "default"


def _prefill(variant: str, settings: Settings, client: redis.Redis, count: int) -> None:
    if variant == "bgworker":
        celery = create_celery(settings)
        store = JobStore(client, settings.job_retention_seconds)
        for _ in range(count):
            submit(store, celery, DEBUG_NOOP, {}, QUEUE)
        celery.close()
    else:
        from bench.bare_celery import NOOP, create_app

        app = create_app(settings)
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                app.send_task(NOOP, queue=QUEUE, producer=producer)
        app.close()


def _worker(variant: str, concurrency: int, env: dict[str, str], logs: Path) -> Process:
    if variant == "bgworker":
        argv = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(concurrency)]
    else:
        argv = [sys.executable, "-m", "bench.bare_celery", str(concurrency)]
    return Process(argv, env, log_path=logs / f"overhead-{variant}-{concurrency}.log")


def measure(variant: str, concurrency: int, env: dict[str, str], count: int, logs: Path) -> float:
    settings = Settings.from_env(env)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    _prefill(variant, settings, client, count)
    assert client.llen(QUEUE) == count
    worker = _worker(variant, concurrency, env, logs)
    try:
        wait_for(lambda: client.llen(QUEUE) < count, 60, "the first take", interval=0.001)
        start = time.perf_counter()

        # kombu pops a message and then records it in `unacked` (two commands), so an empty
        # queue and hash can be seen with one message in between: for bgworker, wait for the
        # records too; for bare Celery, see the emptiness twice in a row.
        def drained() -> bool:
            if client.llen(QUEUE) or client.hlen("unacked"):
                return False
            if variant == "bgworker":
                return int(client.hget(STATS_STATES, "succeeded") or 0) >= count
            time.sleep(0.002)
            return not (client.llen(QUEUE) or client.hlen("unacked"))

        wait_for(drained, 300, "the queue to drain", interval=0.002)
        elapsed = time.perf_counter() - start
    finally:
        worker.stop()
    if variant == "bgworker":
        done = int(client.hget(STATS_STATES, "succeeded") or 0)
        if done != count:
            raise RuntimeError(f"only {done} of {count} bgworker jobs succeeded")
    client.close()
    return count / elapsed


LOG_LEVELS = ("INFO", "WARNING")


def run(env: dict[str, str], rounds: int, count: int, logs: Path) -> dict[str, Any]:
    """Both log levels: INFO (the default: Celery logs every task twice) and WARNING."""
    keys = [(level, c) for level in LOG_LEVELS for c in (1, 2)]
    raw: dict[str, dict[tuple[str, int], list[float]]] = {
        v: {k: [] for k in keys} for v in VARIANTS
    }
    for r in range(rounds):
        for level, concurrency in keys:
            order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
            run_env = {**env, "BGWORKER_LOG_LEVEL": level}
            for variant in order:
                rate = measure(variant, concurrency, run_env, count, logs)
                raw[variant][(level, concurrency)].append(rate)
        log(
            f"overhead round {r + 1}/{rounds}: "
            + ", ".join(
                f"{v}/{lv}/c{c}={raw[v][(lv, c)][-1]:.0f}/s" for v in VARIANTS for lv, c in keys
            )
        )
    out: dict[str, Any] = {"count": count, "levels": {}}
    for level in LOG_LEVELS:
        by_c: dict[str, Any] = {}
        for c in (1, 2):
            bg, bare = raw["bgworker"][(level, c)], raw["bare"][(level, c)]
            by_c[str(c)] = {
                "bgworker": Stat.of(bg).as_dict(),
                "bare": Stat.of(bare).as_dict(),
                "samples": {"bgworker": bg, "bare": bare},
                # Ratio of medians, and the range of per-round ratios (pairs ran back to back).
                "ratio": Stat.of(bg).median / Stat.of(bare).median,
                "ratio_rounds": Stat.of([a / b for a, b in zip(bg, bare, strict=True)]).as_dict(),
            }
        out["levels"][level] = by_c
    return out
