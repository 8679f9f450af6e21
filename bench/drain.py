"""Benchmark 4 and 5: a backlog of thumbnail jobs drained by 1, then 2 worker processes;
and the memory of a worker (idle, and at its peak while making thumbnails).

Workers start first and report ready; then the 200 records are written and their messages
published (well under a second), and the clock runs until all 200 jobs have succeeded.
Each worker process has one pool process (concurrency 1), as a pod per core would.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import Process, Stat, children, log, proc_status, wait_for
from worker.catalog import THUMBNAILS
from worker.celery_app import create_celery
from worker.enqueue import publish
from worker.jobs import STATS_STATES, JobStore, new_id
from worker.settings import Settings
from worker.storage import Storage

WORKER_COUNTS = (1, 2)


def _start_workers(n: int, env: dict[str, str], logs: Path) -> list[Process]:
    argv = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", "1"]
    procs = [
        Process(argv, env, ready_marker=" ready.", log_path=logs / f"drain-{n}-{i}.log")
        for i in range(n)
    ]
    for proc in procs:
        proc.wait_ready()
    return procs


def _memory(proc: Process) -> dict[str, float]:
    """RSS of the main process and its pool process, and the pool process's peak, MiB."""
    main = proc_status(proc.pid)
    kids = [proc_status(pid) for pid in children(proc.pid)]
    return {
        "main_rss": main.get("VmRSS", 0) / 1024,
        "child_rss": sum(k.get("VmRSS", 0) for k in kids) / 1024,
        "child_peak": max((k.get("VmHWM", 0) for k in kids), default=0) / 1024,
    }


def measure(
    workers: int, env: dict[str, str], image: Path, jobs: int, logs: Path
) -> tuple[float, list[dict[str, float]], list[dict[str, float]]]:
    settings = Settings.from_env(env)
    client = redis.Redis.from_url(settings.redis_url)
    client.flushall()
    storage = Storage(settings.storage_dir)
    storage.ensure()
    store = JobStore(client, settings.job_retention_seconds)
    celery = create_celery(settings)
    procs = _start_workers(workers, env, logs)
    try:
        time.sleep(1.0)  # settle after start-up
        idle = [_memory(p) for p in procs]
        records = []
        for _ in range(jobs):
            job_id = new_id()
            original = storage.original(job_id)
            original.parent.mkdir(parents=True, exist_ok=True)
            os.link(image, original)  # the same bytes; the worker only reads it
            args = {"widths": list(settings.thumbnail_widths)}
            records.append(store.create(THUMBNAILS, args, "default", job_id=job_id)[0])
        start = time.perf_counter()
        for job in records:
            publish(celery, job)

        def done() -> bool:
            finished = int(client.hget(STATS_STATES, "succeeded") or 0)
            failed = int(client.hget(STATS_STATES, "failed") or 0)
            if failed:
                raise RuntimeError(f"{failed} thumbnail jobs failed; see {logs}")
            return finished >= jobs

        wait_for(done, 600, f"{jobs} thumbnail jobs", interval=0.01)
        elapsed = time.perf_counter() - start
        busy = [_memory(p) for p in procs]
    finally:
        for proc in procs:
            proc.stop()
        celery.close()
    for sub in ("originals", "thumbnails"):
        for path in (settings.storage_dir / sub).glob("*/*"):
            if path.is_file():
                path.unlink()
    client.close()
    return elapsed, idle, busy


def run(env: dict[str, str], image: Path, rounds: int, jobs: int, logs: Path) -> dict[str, Any]:
    env = {**env, "BGWORKER_LOG_LEVEL": "INFO"}
    times: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    idle: list[dict[str, float]] = []
    busy: list[dict[str, float]] = []
    for r in range(rounds):
        order = WORKER_COUNTS if r % 2 == 0 else tuple(reversed(WORKER_COUNTS))
        for n in order:
            elapsed, idle_mem, busy_mem = measure(n, env, image, jobs, logs)
            times[n].append(elapsed)
            idle += idle_mem
            busy += busy_mem
        log(
            f"drain round {r + 1}/{rounds}: "
            + ", ".join(f"{n} worker(s) {times[n][-1]:.1f}s" for n in WORKER_COUNTS)
        )
    rates = {n: [jobs / t for t in ts] for n, ts in times.items()}
    efficiency = [b / (2 * a) for a, b in zip(rates[1], rates[2], strict=True)]
    return {
        "jobs": jobs,
        "image": image.name,
        "seconds": {str(n): Stat.of(ts).as_dict() for n, ts in times.items()},
        "rates": {str(n): Stat.of(rs).as_dict() for n, rs in rates.items()},
        "samples": {str(n): rs for n, rs in rates.items()},
        "efficiency": Stat.of(efficiency).as_dict(),
        "memory": {
            "idle_main": Stat.of([m["main_rss"] for m in idle]).as_dict(),
            "idle_child": Stat.of([m["child_rss"] for m in idle]).as_dict(),
            "idle_total": Stat.of([m["main_rss"] + m["child_rss"] for m in idle]).as_dict(),
            "after_main": Stat.of([m["main_rss"] for m in busy]).as_dict(),
            "after_child": Stat.of([m["child_rss"] for m in busy]).as_dict(),
            "peak_child": Stat.of([m["child_peak"] for m in busy]).as_dict(),
            "peak_total": Stat.of([m["main_rss"] + m["child_peak"] for m in busy]).as_dict(),
        },
    }
