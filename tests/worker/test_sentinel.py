"""Redis Sentinel failover on loopback: the primary is SIGKILLed mid-run and no job is lost.

A primary redis-server and a replica (``--replicaof``), three sentinels (quorum 2), all
password-protected, on free loopback ports. The API (the real app, lifespan and all) and
a real ``bgworker worker`` reach Redis only through ``BGWORKER_REDIS_SENTINELS``. Jobs
are submitted with idempotency keys, the way a client retries through a ``503``.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from tests.conftest import TEST_ENV
from tests.helpers import WorkerProcess, wait_for
from worker.jobs import TERMINAL, events_key, job_key
from worker.redis_client import sync_client
from worker.redis_server import free_port
from worker.settings import Settings

pytestmark = pytest.mark.slow

MASTER = "bgmaster"
PASSWORD = "primary:p@ss/word"  # the primary's (and replica's): requirepass + masterauth
SENTINEL_PASSWORD = "sentinel-secret"  # the sentinels' own requirepass
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
JOBS = 60
CONCURRENCY = 2


def sentinel_command(config: Path) -> list[str]:
    """``redis-sentinel CONFIG``, or the same binary's own mode: Debian's redis-sentinel
    package only adds a name (and a service) for ``redis-server --sentinel``."""
    binary = shutil.which("redis-sentinel")
    if binary is not None:
        return [binary, str(config)]
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed (scripts/bootstrap.sh installs it)"
    return [server, str(config), "--sentinel"]


@dataclass
class Node:
    """One redis-server or sentinel process, in a session of its own."""

    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, cwd=self.directory, start_new_session=True
        )

    def client(self, password: str) -> redis.Redis:
        return redis.Redis(port=self.port, password=password, socket_timeout=2)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@dataclass
class Topology:
    primary: Node
    replica: Node
    sentinels: list[Node]

    def master_address(self) -> tuple[str, int] | None:
        """What the sentinels that answer say the primary is, if they agree."""
        answers = set()
        for sentinel in self.sentinels:
            client = sentinel.client(SENTINEL_PASSWORD)
            try:
                host, port = client.sentinel_get_master_addr_by_name(MASTER)
                answers.add((host.decode() if isinstance(host, bytes) else host, int(port)))
            except redis.RedisError:
                continue
            finally:
                client.close()
        return answers.pop() if len(answers) == 1 else None


def _redis_node(name: str, root: Path, replica_of: int | None = None) -> Node:
    node = Node(name, free_port(), root / name)
    node.directory.mkdir(parents=True)
    args = ["--bind", "127.0.0.1", "--port", str(node.port), "--dir", str(node.directory)]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    # Either may become the primary: both ask and give the same password.
    args += ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
    args += ["--logfile", "redis.log"]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    binary = shutil.which("redis-server")
    assert binary is not None
    node.start([binary, *args])
    return node


def _sentinel_node(index: int, root: Path, primary_port: int) -> Node:
    node = Node(f"sentinel{index}", free_port(), root / f"sentinel{index}")
    node.directory.mkdir(parents=True)
    config = node.directory / "sentinel.conf"  # sentinels rewrite their config: one each
    config.write_text(
        f"port {node.port}\n"
        "bind 127.0.0.1\n"
        f"dir {node.directory}\n"
        "logfile redis.log\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
        f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
        f'sentinel auth-pass {MASTER} "{PASSWORD}"\n'
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    node.start(sentinel_command(config))
    return node


def _ready(topology: Topology) -> bool:
    try:
        replica = topology.replica.client(PASSWORD)
        link = replica.info("replication").get("master_link_status")
        replica.close()
        if link != "up":
            return False
        for sentinel in topology.sentinels:
            client = sentinel.client(SENTINEL_PASSWORD)
            state = client.sentinel_master(MASTER)
            client.close()
            if state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                return False
    except redis.RedisError:
        return False
    return True


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    root = tmp_path / "redis"
    nodes: list[Node] = []
    try:
        primary = _redis_node("primary", root)
        nodes.append(primary)
        replica = _redis_node("replica", root, replica_of=primary.port)
        nodes.append(replica)
        sentinels = []
        for index in range(3):
            sentinels.append(_sentinel_node(index, root, primary.port))
            nodes.append(sentinels[-1])
        topo = Topology(primary, replica, sentinels)
        # Sentinels find the replica and each other through the primary (hello messages
        # every 2 s).
        wait_for(lambda: _ready(topo), timeout=30, interval=0.2, what="sentinels and replica")
        yield topo
    finally:
        for node in nodes:
            node.kill()


def sentinel_env(topology: Topology, tmp_path: Path) -> dict[str, str]:
    return {
        **TEST_ENV,
        "BGWORKER_REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in topology.sentinels),
        "BGWORKER_REDIS_SENTINEL_MASTER": MASTER,
        "BGWORKER_REDIS_PASSWORD": PASSWORD,
        "BGWORKER_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "BGWORKER_STATE_DIR": str(tmp_path / "state"),
        "BGWORKER_WORKER_CONCURRENCY": str(CONCURRENCY),
    }


def submit(api: TestClient, key: str, seconds: float, deadline: float) -> str:
    """POST a job, retrying through 503s with the same Idempotency-Key, as clients do."""
    while True:
        resp = api.post(
            "/v1/jobs",
            json={"task": "debug.sleep", "args": {"seconds": seconds}},
            headers={"Idempotency-Key": key},
        )
        if resp.status_code == 202:
            job_id: str = resp.json()["id"]
            return job_id
        assert resp.status_code == 503, resp.text
        assert time.monotonic() < deadline, f"{key}: still 503 at the deadline"
        time.sleep(0.2)


def states(api: TestClient, ids: list[str]) -> dict[str, str] | None:
    """Each job's state through the API, or None while the API answers 503."""
    found = {}
    for job_id in ids:
        resp = api.get(f"/v1/jobs/{job_id}")
        if resp.status_code != 200:
            return None
        found[job_id] = resp.json()["state"]
    return found


def test_sentinel_clients_follow_the_primary(topology: Topology, tmp_path: Path) -> None:
    settings = Settings.from_env(sentinel_env(topology, tmp_path))
    client = sync_client(settings, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.set("where", "primary")
        assert client.connection_pool.get_master_address()[1] == topology.primary.port
        replica = topology.replica.client(PASSWORD)
        wait_for(lambda: replica.get("where") == b"primary", timeout=5, what="replication")
        replica.close()
    finally:
        client.close()


def test_primary_killed_mid_run_loses_no_job(topology: Topology, tmp_path: Path) -> None:
    env = sentinel_env(topology, tmp_path)
    settings = Settings.from_env(env)
    rng = random.Random(14)
    durations = [round(rng.uniform(0.2, 1.0), 2) for _ in range(JOBS)]
    # The failover itself (detection after down-after-milliseconds, election, promotion),
    # then the slowest recovery of a job interrupted by it: its message comes back after
    # the visibility timeout, a lost one is re-queued by the reaper within about three
    # restore intervals; then the work itself on CONCURRENCY pool processes, plus slack
    # for reconnect backoffs and a busy 2-core machine.
    failover_bound = (DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS) / 1000
    bound = (
        failover_bound
        + settings.visibility_timeout
        + 3 * settings.restore_interval
        + sum(durations) / CONCURRENCY
        + 30
    )
    worker = WorkerProcess(env).wait_ready()
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as api:
            started = time.monotonic()
            deadline = started + bound
            first = 2 * JOBS // 3
            ids = [submit(api, f"failover-{i}", durations[i], deadline) for i in range(first)]

            def some_done() -> bool:
                found = states(api, ids)
                return found is not None and list(found.values()).count("succeeded") >= 8

            wait_for(some_done, timeout=60, interval=0.1, what="the first jobs to finish")
            before = states(api, ids)
            assert before is not None
            killed = time.monotonic()
            topology.primary.kill()
            # Submitted while the primary is gone and the sentinels fail over: 503, then
            # accepted by the new primary.
            ids += [
                submit(api, f"failover-{i}", durations[i], deadline) for i in range(first, JOBS)
            ]
            replica_address = ("127.0.0.1", topology.replica.port)
            wait_for(
                lambda: topology.master_address() == replica_address,
                timeout=failover_bound + 10,
                interval=0.1,
                what="the sentinels to promote the replica",
            )
            promoted = time.monotonic() - killed

            def all_finished() -> dict[str, str] | None:
                found = states(api, ids)
                if found is None or any(s not in TERMINAL for s in found.values()):
                    return None
                return found

            final = wait_for(
                all_finished,
                timeout=max(1.0, deadline - time.monotonic()),
                interval=0.5,
                what=f"all {JOBS} jobs to finish within {bound:.0f} s",
            )
            finished = time.monotonic() - started
            attempts = {job_id: api.get(f"/v1/jobs/{job_id}").json()["attempts"] for job_id in ids}
    finally:
        worker.stop()

    client = sync_client(settings, socket_timeout=5)
    try:
        assert client.connection_pool.get_master_address()[1] == topology.replica.port
        terminal_entries = {
            job_id: [
                fields[b"state"].decode()
                for _, fields in client.xrange(events_key(job_id))
                if fields[b"state"].decode() in TERMINAL
            ]
            for job_id in ids
        }
        missing = [job_id for job_id in ids if not client.exists(job_key(job_id))]
    finally:
        client.close()
    runs = {job_id: worker.output.count(f"debug.sleep[{job_id}] succeeded") for job_id in ids}
    figures = (
        f"{JOBS} jobs; primary killed {killed - started:.1f} s in with "
        f"{list(before.values()).count('succeeded')} done; replica promoted {promoted:.1f} s "
        f"after the kill; all finished {finished:.1f} s after the first submit (bound "
        f"{bound:.0f} s); {sum(1 for n in attempts.values() if n > 1)} started more than once, "
        f"{sum(1 for n in runs.values() if n > 1)} ran to the end twice"
    )
    print(figures)
    assert not missing, f"records gone after the failover (never replicated): {missing}"
    assert set(final.values()) == {"succeeded"}, (final, figures)
    assert all(entries == ["succeeded"] for entries in terminal_entries.values()), (
        {job_id: e for job_id, e in terminal_entries.items() if e != ["succeeded"]},
        figures,
    )
    assert PASSWORD not in worker.output and SENTINEL_PASSWORD not in worker.output
