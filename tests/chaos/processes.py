"""The system under test, as real processes on loopback: redis-server, the API, workers.

Every process is started in a session of its own and carries this run's marker in its
environment; killing "a process and everything it started" means SIGKILLing the members
of its session that carry the marker. That finds pool children even after they were
moved to process groups of their own (worker/shutdown.py) or orphaned by a SIGKILLed
main process, and can never hit a process this run did not start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from tests.helpers import REPO, WorkerProcess, wait_for
from worker.redis_server import RedisServer, free_port

MARKER = "CHAOS_RUN_ID"


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces and parens)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _has_marker(pid: int, marker: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={marker}".encode() in environ.split(b"\0")


def session_members(sid: int, marker: str) -> list[int]:
    """Live processes of session ``sid`` started by this run (zombies left out)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # state, ppid, pgrp, session, ...
        if fields is None or len(fields) < 4 or fields[0] == "Z" or int(fields[3]) != sid:
            continue
        if _has_marker(int(entry), marker):
            members.append(int(entry))
    return members


def kill_session(sid: int, marker: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every member of the session (the leader first, so it forks no more);
    returns the pids signalled. Call it before the leader is reaped."""
    signalled: list[int] = []
    deadline = time.monotonic() + timeout
    while members := session_members(sid, marker):
        for pid in sorted(members, key=lambda p: p != sid):
            try:
                os.kill(pid, signal.SIGKILL)
                if pid not in signalled:
                    signalled.append(pid)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return signalled


class ApiProcess:
    """``bgworker api`` as a subprocess on a fixed port, its output collected."""

    def __init__(self, env: Mapping[str, str], port: int, name: str) -> None:
        self.name = name
        self.port = port
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float) -> ApiProcess:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"API exited with {self.proc.returncode}:\n{self.output}")
            return self.healthy()

        wait_for(up, timeout, interval=0.1, what=f"the API on port {self.port}")
        return self

    @property
    def output(self) -> str:
        return "".join(self.lines)


@dataclass
class Worker:
    """One ``bgworker worker`` of the soak, named for its logs (w1, w2, ...)."""

    name: str
    process: WorkerProcess
    started: float = field(default_factory=time.time)
    exited: float | None = None
    exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ready(self) -> bool:
        return self.process.ready.is_set()


@dataclass(frozen=True)
class Incident:
    """Something the soak did not cause: a process that exited by itself."""

    at: float
    what: str
    detail: str


class System:
    """Redis, the API and ``workers`` workers, with the operations the fault loop needs.

    Workers move from ``live`` to ``draining`` (SIGTERMed, finishing) to ``gone``; the
    logs of all of them are kept for the checks and written under ``root/logs``.
    """

    def __init__(self, root: Path, env: Mapping[str, str], workers: int, concurrency: int):
        self.root = root
        self.marker = uuid.uuid4().hex
        self.redis = RedisServer(root / "redis")
        self.env = {**env, "BGWORKER_REDIS_URL": self.redis.url, MARKER: self.marker}
        self.size = workers
        self.concurrency = concurrency
        self.api_port = free_port()
        self.api: ApiProcess | None = None
        self.apis: list[ApiProcess] = []
        self.live: list[Worker] = []
        self.draining: list[Worker] = []
        self.gone: list[Worker] = []
        self.incidents: list[Incident] = []
        self._count = 0

    # -- start ------------------------------------------------------------------------
    def start(self, timeout: float) -> None:
        self.start_redis()
        self.start_api(timeout)
        for _ in range(self.size):
            self.start_worker()
        self.wait_workers_ready(timeout)

    def start_redis(self) -> None:
        self.redis.start()
        client = self.redis_client()
        try:
            # Second-resolution "#TS:" annotations in the append-only file: the checks read
            # it back to show when a lost job's message was pushed, popped, registered.
            client.config_set("aof-timestamp-enabled", "yes")
        finally:
            client.close()

    def redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port, socket_connect_timeout=2, socket_timeout=10)

    @property
    def redis_up(self) -> bool:
        return self.redis.process is not None and self.redis.process.poll() is None

    def start_api(self, timeout: float) -> ApiProcess:
        api = ApiProcess(self.env, self.api_port, f"api{len(self.apis) + 1}")
        self.apis.append(api)
        self.api = api
        return api.wait_ready(timeout)

    def start_worker(self) -> Worker:
        self._count += 1
        worker = Worker(
            f"w{self._count}",
            WorkerProcess(self.env, "--concurrency", str(self.concurrency)),
        )
        self.live.append(worker)
        return worker

    def wait_workers_ready(self, timeout: float) -> None:
        for worker in list(self.live):
            worker.process.wait_ready(timeout)

    # -- faults -----------------------------------------------------------------------
    def kill_worker(self, worker: Worker) -> list[int]:
        """SIGKILL a worker's main process and its pool children."""
        pids = kill_session(worker.pid, self.marker)
        self._retire(worker, self.live)
        return pids

    def term_worker(self, worker: Worker) -> None:
        worker.process.signal(signal.SIGTERM)
        self.live.remove(worker)
        self.draining.append(worker)

    def kill_api(self) -> None:
        assert self.api is not None
        kill_session(self.api.proc.pid, self.marker)
        self.api.proc.wait(10)

    # -- keeping it whole -------------------------------------------------------------
    def supervise(self) -> None:
        """Notice processes that exited on their own: record them, replace them."""
        for worker in list(self.live):
            if worker.process.proc.poll() is not None:
                self._retire(worker, self.live)
                self.incidents.append(
                    Incident(
                        time.time(),
                        f"worker {worker.name} (pid {worker.pid}) exited by itself "
                        f"with {worker.exit_code}",
                        "".join(worker.process.lines[-15:]),
                    )
                )
                self.start_worker()
        for worker in list(self.draining):
            if worker.process.proc.poll() is not None:
                self._retire(worker, self.draining)
        if not self.redis_up:
            self.incidents.append(Incident(time.time(), "redis-server exited by itself", ""))
            self.start_redis()
        if self.api is not None and self.api.proc.poll() is not None:
            self.incidents.append(
                Incident(
                    time.time(),
                    f"API {self.api.name} exited by itself with {self.api.proc.returncode}",
                    "".join(self.api.lines[-15:]),
                )
            )
            kill_session(self.api.proc.pid, self.marker)
            self.start_api(30)

    def _retire(self, worker: Worker, among: list[Worker]) -> None:
        # Orphaned pool children would keep running (and recording) jobs.
        kill_session(worker.pid, self.marker)
        worker.exit_code = worker.process.proc.wait(10)
        worker.exited = time.time()
        among.remove(worker)
        self.gone.append(worker)

    def drain(self, timeout: float) -> list[Worker]:
        """Wait for SIGTERMed workers to exit; SIGKILL those past ``timeout``; returns them."""
        deadline = time.monotonic() + timeout
        while self.draining and time.monotonic() < deadline:
            self.supervise()
            time.sleep(0.2)
        stuck = list(self.draining)
        for worker in stuck:
            self.incidents.append(
                Incident(
                    time.time(),
                    f"worker {worker.name} (pid {worker.pid}) still running {timeout:.0f} s "
                    "after SIGTERM; SIGKILLed",
                    "".join(worker.process.lines[-15:]),
                )
            )
            self._retire(worker, self.draining)
        return stuck

    def all_workers(self) -> list[Worker]:
        return sorted(self.gone + self.draining + self.live, key=lambda w: int(w.name[1:]))

    # -- stop -------------------------------------------------------------------------
    def close(self) -> None:
        """Kill everything this run started (safe to call twice) and keep the logs."""
        for worker in self.live + self.draining:
            kill_session(worker.pid, self.marker)
        for api in self.apis:
            kill_session(api.proc.pid, self.marker)
        for worker in self.live + self.draining:
            worker.exit_code = worker.process.proc.wait(10)
            worker.exited = worker.exited or time.time()
        self.gone += self.live + self.draining
        self.live, self.draining = [], []
        for api in self.apis:
            api.proc.wait(10)
        self.redis.kill()
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for worker in self.all_workers():
            (logs / f"{worker.name}-{worker.pid}.log").write_text(worker.process.output)
        for api in self.apis:
            (logs / f"{api.name}-{api.proc.pid}.log").write_text(api.output)
