"""What an enqueue costs with Redis' append-only file fsynced every second or every write.

``python -m bench.durability [--rounds N] [--write]``: two redis-servers on this machine's
disk, one with ``appendfsync everysec`` (the default of ``bgworker dev`` and the chart)
and one with ``appendfsync always`` (chart value ``redis.appendfsync``); the same
enqueue (``worker.enqueue.submit``: message built, one Lua script) runs against each in
slices that alternate, one request at a time (the latency a request pays) and from 16
threads (the throughput, where ``always`` shares one fsync among the writes that arrived
together). ``--write`` puts the figures in docs/performance.md ("Durability"), which
``make bench`` keeps.

WAITAOF (Redis >= 7.2: wait until a write is fsynced, per call) is not measured: the
Redis here is Debian 12's 7.0, which does not have it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench import sections
from bench.common import REPO, Stat, log
from bench.report import versions
from worker.catalog import DEBUG_NOOP
from worker.celery_app import create_celery
from worker.enqueue import submit
from worker.jobs import JobStore
from worker.redis_server import RedisServer
from worker.settings import Settings

POLICIES = ("everysec", "always")
THREADS = 16
DOC = REPO / "docs" / "performance.md"
RAW = REPO / "docs" / "performance" / "durability.json"


def _sequential(store: JobStore, celery: Any, count: int) -> list[float]:
    """Latency of each of ``count`` enqueues, one after the other, in µs."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        submit(store, celery, DEBUG_NOOP, {}, "default")
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _concurrent(url: str, celery: Any, seconds: float) -> float:
    """Enqueues per second from THREADS threads (one client each) for ``seconds``."""
    done = [0] * THREADS
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        store = JobStore(redis.Redis.from_url(url), 3600)
        while time.monotonic() < stop:
            submit(store, celery, DEBUG_NOOP, {}, "default")
            done[i] += 1
        store.client.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - t0)


def run(rounds: int, count: int, seconds: float, work: Path) -> dict[str, Any]:
    servers = {p: RedisServer(work / p, appendfsync=p) for p in POLICIES}
    celery = create_celery(Settings.from_env({}))
    latency: dict[str, list[float]] = {p: [] for p in POLICIES}
    p50: dict[str, list[float]] = {p: [] for p in POLICIES}
    p99: dict[str, list[float]] = {p: [] for p in POLICIES}
    rate: dict[str, list[float]] = {p: [] for p in POLICIES}
    try:
        for server in servers.values():
            server.start()
        for r in range(rounds):
            # Alternating, and in the other order every other round: drift in the
            # machine's load falls on both alike.
            order = POLICIES if r % 2 == 0 else POLICIES[::-1]
            for policy in order:
                client = redis.Redis.from_url(servers[policy].url)
                client.flushall()
                store = JobStore(client, 3600)
                values = _sequential(store, celery, count)
                latency[policy] += values
                p50[policy].append(statistics.median(values))
                p99[policy].append(statistics.quantiles(values, n=100)[98])
                client.flushall()
                rate[policy].append(_concurrent(servers[policy].url, celery, seconds))
                client.close()
                log(
                    f"durability round {r + 1}/{rounds} {policy}: p50 {p50[policy][-1]:.0f} µs,"
                    f" {rate[policy][-1]:.0f}/s from {THREADS} threads"
                )
    finally:
        for server in servers.values():
            server.kill()
        celery.close()
    return {
        "rounds": rounds,
        "count": count,
        "seconds": seconds,
        "p50_us": {p: Stat.of(v).as_dict() for p, v in p50.items()},
        "p99_us": {p: Stat.of(v).as_dict() for p, v in p99.items()},
        "rate_per_s": {p: Stat.of(v).as_dict() for p, v in rate.items()},
    }


def section(results: dict[str, Any]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def cell(kind: str, policy: str, digits: int = 0) -> str:
        s = results[kind][policy]
        return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"

    def ratio(kind: str) -> str:
        return f"{results[kind]['always']['median'] / results[kind]['everysec']['median']:.2f}"

    lines = [
        "<!-- durability-figures:begin (written by python -m bench.durability --write) -->",
        "## Durability: what `appendfsync always` costs an enqueue",
        "",
        f"_Written by `python -m bench.durability --write` on {now}. Do not edit by hand._",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, this VM's "
        f"disk; redis-server {versions().get('redis-server')}. Each enqueue is "
        "`worker.enqueue.submit` (message built, one Lua script), against two redis-servers "
        "with append-only files that differ only in `appendfsync`, in alternating slices: "
        f"{results['rounds']} rounds of {results['count']} enqueues one at a time, then "
        f"{results['seconds']:.0f} s from {THREADS} threads. Medians of the rounds (range).",
        "",
        "| | `everysec` (default) | `always` | always / everysec |",
        "|---|---|---|---|",
        f"| latency p50, one at a time (µs) | {cell('p50_us', 'everysec')} | "
        f"{cell('p50_us', 'always')} | {ratio('p50_us')} |",
        f"| latency p99, one at a time (µs) | {cell('p99_us', 'everysec')} | "
        f"{cell('p99_us', 'always')} | {ratio('p99_us')} |",
        f"| enqueues/s from {THREADS} threads | {cell('rate_per_s', 'everysec')} | "
        f"{cell('rate_per_s', 'always')} | {ratio('rate_per_s')} |",
        "",
        "`everysec` loses nothing that Redis acknowledged on a restart, a SIGKILL of "
        "redis-server or an OOM kill (the file is written before replies go out); a crash of "
        "the host itself can lose the last second or two. `always` fsyncs before each reply, "
        "so an acknowledged job survives even that, at the cost above. WAITAOF (Redis >= 7.2) "
        "is not offered: Debian 12's Redis 7.0, which the chart's image and this machine run, "
        "does not have it.",
        "<!-- durability-figures:end -->",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--count", type=int, default=1000, help="enqueues per sequential slice")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a threaded slice")
    parser.add_argument("--write", action="store_true", help="write docs/performance.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bgworker-durability-"))
    try:
        results = run(args.rounds, args.count, args.seconds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = section(results)
    print(text)
    if args.write:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(results, indent=1) + "\n")
        sections.replace(DOC, "durability", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
