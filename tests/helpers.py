"""Processes and waits shared by the tests: real redis-server, real Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import httpx2 as httpx
import redis

from worker.jobs import Job, JobStore
from worker.redis_server import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_for(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


def wait_state(store: JobStore, job_id: str, *states: str, timeout: float = 30.0) -> Job:
    def check() -> Job | None:
        job = store.get(job_id)
        return job if job is not None and job.state in states else None

    try:
        return wait_for(check, timeout, what=f"job {job_id} to be {states}")
    except AssertionError:
        raise AssertionError(f"job {job_id} is {store.get(job_id)}, expected {states}") from None


class WorkerProcess:
    """``bgworker worker`` as a subprocess, its output collected for assertions."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", *args],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        if not self.ready.wait(timeout):
            raise AssertionError(f"worker not ready after {timeout}s:\n{self.output}")
        return self

    def children(self) -> list[int]:
        """Live pool processes (a killed one may linger as a zombie for a moment)."""
        out = subprocess.run(
            ["ps", "-o", "pid=,stat=", "--ppid", str(self.pid)], capture_output=True, text=True
        ).stdout
        rows = [line.split() for line in out.splitlines() if line.strip()]
        return [int(pid) for pid, stat in rows if not stat.startswith("Z")]

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._reader.join(5)


class ApiProcess:
    """``bgworker api`` (uvicorn) as a subprocess on a free loopback port, ready once
    ``/readyz`` answers."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api", "--port", str(self.port)],
            env={**os.environ, **env, "BGWORKER_LOG_LEVEL": "WARNING"},
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ready, timeout=30, what="bgworker api to answer /readyz")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def queue_lengths(client: redis.Redis) -> dict[str, int]:
    return {q: int(client.llen(q)) for q in ("critical", "default", "low")}
