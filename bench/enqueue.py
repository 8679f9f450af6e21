"""Benchmark 3: POST /v1/jobs over HTTP (no worker running) against a one-LPUSH app.

wrk (2 threads) drives each server on loopback for short slices; the two servers alternate
slice by slice, so each configuration gets its total time in ``rounds`` interleaved pieces.
Also POST /v1/images with a ~200 KB JPEG (bgworker only: no anchor does that work).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from bench.common import Process, Stat, log, proc_status, wait_for
from worker.catalog import DEBUG_NOOP
from worker.celery_app import create_celery
from worker.jobs import JobStore, new_id
from worker.message import message_builder
from worker.redis_server import free_port
from worker.settings import Settings

APPS = ("bgworker", "minimal")
CONNECTIONS = (16, 64)
JOB_BODY = '{"task": "debug.noop", "args": {}}'


def _lua_jobs(path: Path) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{JOB_BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return path


def _lua_image(path: Path, image: Path) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        f'local f = assert(io.open("{image}", "rb"))\n'
        'wrk.body = f:read("*all")\n'
        "f:close()\n"
        'wrk.headers["Content-Type"] = "image/jpeg"\n'
    )
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--latency"]
        + ["-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "requests": total,
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": 1 if errors else 0,
    }


def _server(app: str, port: int, env: dict[str, str], logs: Path) -> Process:
    if app == "bgworker":
        argv = [sys.executable, "-m", "worker.cli", "api", "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
    else:
        argv = [sys.executable, "-m", "bench.minimal_app", str(port)]
    proc = Process(argv, env, log_path=logs / f"enqueue-{app}.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        request = urllib.request.Request(
            base + "/v1/jobs", data=JOB_BODY.encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 202)
        except OSError:
            return False

    wait_for(up, 60, f"{app} to listen")
    return proc


def breakdown(settings: Settings, count: int) -> dict[str, Any]:
    """Where one POST /v1/jobs spends its time once validated: the two steps of submit().

    Measured in this process, one request at a time (no HTTP, sync client), microseconds
    of wall and CPU time per request.
    """
    client = redis.Redis.from_url(settings.redis_url)
    store = JobStore(client, settings.job_retention_seconds)
    celery = create_celery(settings)
    builder = message_builder(celery)
    steps = ("build the Celery message", "record + message (one Lua script)")
    wall = dict.fromkeys(steps, 0.0)
    cpu = dict.fromkeys(steps, 0.0)
    for _ in range(count):
        marks = [(time.perf_counter(), time.process_time())]
        job_id = new_id()
        message = builder.build(job_id, DEBUG_NOOP, {}, "default", time.time())
        marks.append((time.perf_counter(), time.process_time()))
        store.create(DEBUG_NOOP, {}, "default", job_id=job_id, message=message)
        marks.append((time.perf_counter(), time.process_time()))
        for i, step in enumerate(steps):
            wall[step] += marks[i + 1][0] - marks[i][0]
            cpu[step] += marks[i + 1][1] - marks[i][1]
    celery.close()
    client.flushall()
    client.close()
    return {
        step: {"wall_us": 1e6 * wall[step] / count, "cpu_us": 1e6 * cpu[step] / count}
        for step in steps
    }


def run(
    env: dict[str, str],
    redis_url: str,
    storage: Path,
    image: Path,
    rounds: int,
    slice_seconds: float,
    image_slice_seconds: float,
    work: Path,
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs it with apt-get)")
    client = redis.Redis.from_url(redis_url)
    ports = {app: free_port() for app in APPS}
    servers = {app: _server(app, ports[app], env, work) for app in APPS}
    memory: dict[str, dict[str, float]] = {}
    try:
        time.sleep(2)
        for app, proc in servers.items():
            memory[app] = {"idle_rss_mib": proc_status(proc.pid).get("VmRSS", 0) / 1024}
        jobs_lua = _lua_jobs(work / "post-job.lua")
        image_lua = _lua_image(work / "post-image.lua", image)
        raw: dict[str, dict[int, list[dict[str, float]]]] = {
            app: {c: [] for c in CONNECTIONS} for app in APPS
        }
        images: list[dict[str, float]] = []
        for r in range(rounds):
            for connections in CONNECTIONS:
                order = APPS if r % 2 == 0 else tuple(reversed(APPS))
                for app in order:
                    client.flushall()
                    url = f"http://127.0.0.1:{ports[app]}/v1/jobs"
                    raw[app][connections].append(wrk(url, jobs_lua, connections, slice_seconds))
            client.flushall()
            shutil.rmtree(storage / "originals", ignore_errors=True)
            url = f"http://127.0.0.1:{ports['bgworker']}/v1/images"
            images.append(wrk(url, image_lua, 16, image_slice_seconds))
            shutil.rmtree(storage / "originals", ignore_errors=True)
            log(
                f"enqueue round {r + 1}/{rounds}: "
                + ", ".join(
                    f"{a}/{c}={raw[a][c][-1]['rps']:.0f}/s" for a in APPS for c in CONNECTIONS
                )
                + f", images={images[-1]['rps']:.0f}/s"
            )
        for app, proc in servers.items():
            status = proc_status(proc.pid)
            memory[app]["after_load_rss_mib"] = status.get("VmRSS", 0) / 1024
            memory[app]["peak_rss_mib"] = status.get("VmHWM", 0) / 1024
    finally:
        for proc in servers.values():
            proc.stop()
        client.close()

    def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
        return {
            "rps": Stat.of([x["rps"] for x in rows]).as_dict(),
            "p50": Stat.of([x["p50"] for x in rows]).as_dict(),
            "p99": Stat.of([x["p99"] for x in rows]).as_dict(),
            "non2xx": sum(x["non2xx"] for x in rows),
            "socket_errors": sum(x["socket_errors"] for x in rows),
            "requests": sum(x["requests"] for x in rows),
        }

    return {
        "slice_seconds": slice_seconds,
        "rounds": rounds,
        "results": {
            app: {str(c): summary(rows) for c, rows in by.items()} for app, by in raw.items()
        },
        "samples": {
            app: {str(c): [x["rps"] for x in rows] for c, rows in by.items()}
            for app, by in raw.items()
        },
        "ratio": {
            str(c): Stat.of(
                [
                    a["rps"] / b["rps"]
                    for a, b in zip(raw["bgworker"][c], raw["minimal"][c], strict=True)
                ]
            ).as_dict()
            for c in CONNECTIONS
        },
        "images": summary(images),
        "image_bytes": image.stat().st_size,
        "memory": memory,
        "breakdown": breakdown(Settings.from_env(env), 2000),
    }
