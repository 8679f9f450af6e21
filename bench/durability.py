"""What an enqueue costs with its fsync: every second, every write, or waited for (WAITAOF).

``python -m bench.durability [--rounds N] [--write]``: redis-servers on this machine's
disk with ``appendfsync everysec`` (the default of ``bgworker dev`` and the chart) and
``appendfsync always`` (chart value ``redis.appendfsync``), and Valkey 8 servers (WAITAOF
needs Redis >= 7.2; Debian 12's Redis is 7.0) with ``everysec`` alone and with WAITAOF
after each enqueue (``BGWORKER_ENQUEUE_FSYNC=1``). The same enqueue
(``worker.enqueue.submit``: message built, one Lua script) runs against each in slices
that alternate, one request at a time (the latency a request pays) and from 16 threads
(the throughput, where one fsync serves the writes that arrived together). ``--write``
puts the figures in docs/performance.md ("Durability"), which ``make bench`` keeps.
Needs ``valkey-server`` (``apt-get install -t bookworm-backports valkey-server``).
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

# (label, server binary, appendfsync, WAITAOF after each enqueue)
CONFIGS: tuple[tuple[str, str, str, bool], ...] = (
    ("everysec", "redis-server", "everysec", False),
    ("always", "redis-server", "always", False),
    ("valkey everysec", "valkey-server", "everysec", False),
    ("valkey everysec + WAITAOF", "valkey-server", "everysec", True),
)
POLICIES = tuple(label for label, *_ in CONFIGS)
THREADS = 16
DOC = REPO / "docs" / "performance.md"
RAW = REPO / "docs" / "performance" / "durability.json"


def _enqueue(store: JobStore, celery: Any, wait_aof: bool) -> None:
    submit(store, celery, DEBUG_NOOP, {}, "default")
    if wait_aof:  # on the same connection (single-connection client), as the API pipelines it
        store.client.execute_command("WAITAOF", 1, 0, 2000)


def _sequential(store: JobStore, celery: Any, count: int, wait_aof: bool) -> list[float]:
    """Latency of each of ``count`` enqueues, one after the other, in µs."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        _enqueue(store, celery, wait_aof)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _concurrent(url: str, celery: Any, seconds: float, wait_aof: bool) -> float:
    """Enqueues per second from THREADS threads (one client each) for ``seconds``."""
    done = [0] * THREADS
    stop = time.monotonic() + seconds

    def work(i: int) -> None:
        store = JobStore(redis.Redis.from_url(url, single_connection_client=True), 3600)
        while time.monotonic() < stop:
            _enqueue(store, celery, wait_aof)
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
    servers = {
        label: RedisServer(work / label.replace(" ", "-"), appendfsync=fsync, binary=binary)
        for label, binary, fsync, _ in CONFIGS
    }
    waits = {label: wait for label, _, _, wait in CONFIGS}
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
                client = redis.Redis.from_url(servers[policy].url, single_connection_client=True)
                client.flushall()
                store = JobStore(client, 3600)
                values = _sequential(store, celery, count, waits[policy])
                latency[policy] += values
                p50[policy].append(statistics.median(values))
                p99[policy].append(statistics.quantiles(values, n=100)[98])
                client.flushall()
                rate[policy].append(
                    _concurrent(servers[policy].url, celery, seconds, waits[policy])
                )
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

    def ratio(kind: str, label: str, base: str) -> str:
        return f"{results[kind][label]['median'] / results[kind][base]['median']:.2f}"

    rows = []
    for label, binary, _, _ in CONFIGS:
        base = "everysec" if binary == "redis-server" else "valkey everysec"
        rows.append(
            f"| {label} | {cell('p50_us', label)} | {ratio('p50_us', label, base)} | "
            f"{cell('p99_us', label)} | {cell('rate_per_s', label)} | "
            f"{ratio('rate_per_s', label, base)} |"
        )
    lines = [
        "<!-- durability-figures:begin (written by python -m bench.durability --write) -->",
        "## Durability: what `appendfsync always` and WAITAOF cost an enqueue",
        "",
        f"_Written by `python -m bench.durability --write` on {now}. Do not edit by hand._",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, this VM's "
        f"disk; redis-server {versions().get('redis-server')} and Valkey 8 (Debian's "
        "bookworm-backports; WAITAOF needs Redis 7.2 or Valkey). Each enqueue is "
        "`worker.enqueue.submit` (message built, one Lua script) against servers with "
        "append-only files, in alternating slices; with WAITAOF it waits on the same "
        "connection for the fsync, as the API does with `BGWORKER_ENQUEUE_FSYNC=1` (here one "
        "round trip more than the API's pipeline). "
        f"{results['rounds']} rounds of {results['count']} enqueues one at a time, then "
        f"{results['seconds']:.0f} s from {THREADS} threads. Medians of the rounds (range); "
        "ratios against `everysec` on the same server.",
        "",
        "| configuration | p50 one at a time (µs) | ratio | p99 (µs) | enqueues/s, "
        f"{THREADS} threads | ratio |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "`everysec` loses nothing that Redis acknowledged on a restart, a SIGKILL of "
        "redis-server or an OOM kill (the file is written before replies go out); a crash of "
        "the host itself can lose the last second or two. `always` fsyncs before each reply; "
        "`everysec` with WAITAOF answers a new job only after the fsync that follows it (at "
        "most a second later, shared by every write of that second). Either way a job the "
        "client got a 202 for survives even a host crash, at the cost above.",
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
