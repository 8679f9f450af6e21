"""bgworker's containers on one host: a password-protected redis-server, the API, workers.

Every container runs with ``--network host`` (all traffic stays on loopback), a
read-only root filesystem and a tmpfs ``/tmp`` as the chart runs them, and shares one
named volume for uploads and thumbnails. Names carry a per-run prefix and a label, and
:meth:`Stack.close` removes every container and the volume it made.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tests.e2e.commands import run
from worker.redis_server import free_port

LABEL = "org.bgworker.e2e"
# One awkward password: it has to survive the Secret → env → URL path intact.
REDIS_PASSWORD = "e2e p@ss:/w0rd"


@dataclass
class Container:
    name: str

    def inspect(self, template: str) -> str:
        return run("docker", "inspect", "--format", template, self.name).stdout.strip()

    @property
    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    @property
    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def logs(self, since_start: bool = False) -> str:
        """Its output; with ``since_start`` only that of its latest start."""
        since = ["--since", self.inspect("{{.State.StartedAt}}")] if since_start else []
        result = run("docker", "logs", *since, self.name, check=False)
        return result.stdout + result.stderr

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a worker's latest start has logged Celery's " ready." line."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.logs(since_start=True):
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} is not ready:\n{self.logs()[-3000:]}")
            time.sleep(0.3)

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("docker", "exec", self.name, *args, check=False)

    def process_uids(self) -> dict[str, str]:
        """Every process in the container: command → real, effective, saved, fs uid."""
        out = run("docker", "top", self.name, "-eo", "pid,comm").stdout.splitlines()[1:]
        uids = {}
        for line in out:
            pid, _, comm = line.strip().partition(" ")
            status = Path(f"/proc/{pid}/status").read_text()
            uid_line = next(x for x in status.splitlines() if x.startswith("Uid:"))
            uids[f"{comm.strip()}[{pid}]"] = " ".join(uid_line.split()[1:])
        return uids

    def start(self) -> None:
        run("docker", "start", self.name)

    def stop(self, grace: int) -> float:
        """``docker stop -t grace``; the seconds it took."""
        started = time.monotonic()
        run("docker", "stop", "--time", str(grace), self.name, timeout=grace + 60)
        return time.monotonic() - started

    def kill(self) -> None:
        run("docker", "kill", "--signal", "KILL", self.name)

    def wait_exited(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout:.0f} s")
            time.sleep(0.2)
        return self.exit_code


@dataclass
class Stack:
    """One redis-server on the host and the containers of one test run."""

    images: dict[str, str]
    env: dict[str, str]
    workdir: Path
    prefix: str = field(default_factory=lambda: f"bgw-e2e-{secrets.token_hex(3)}")
    api_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    redis: subprocess.Popen[bytes] | None = None
    containers: list[Container] = field(default_factory=list)

    @property
    def volume(self) -> str:
        return f"{self.prefix}-storage"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing (scripts/bootstrap.sh installs it)"
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "redis.conf"
        # A config file, not arguments: the password has a space in it.
        conf.write_text(
            f"port {self.redis_port}\nbind 127.0.0.1\ndir {data}\nappendonly yes\n"
            f'appendfsync everysec\nsave ""\nrequirepass "{REDIS_PASSWORD}"\n'
        )
        self.redis = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        cli = ["redis-cli", "-p", str(self.redis_port), "--no-auth-warning", "-a", REDIS_PASSWORD]
        while subprocess.run([*cli, "ping"], capture_output=True, text=True).stdout.strip() != (
            "PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.1)

    def container_env(self) -> dict[str, str]:
        return {
            **self.env,
            # The URL has no password: it comes separately, as the chart passes the Secret.
            "BGWORKER_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "BGWORKER_REDIS_PASSWORD": REDIS_PASSWORD,
        }

    def start(self, role: str, name: str, *args: str) -> Container:
        """``docker run -d`` one container of ``role`` (api/worker) with the stack's env."""
        container = Container(f"{self.prefix}-{name}")
        env_args = [arg for k, v in self.container_env().items() for arg in ("--env", f"{k}={v}")]
        run(
            "docker",
            "run",
            "--detach",
            "--name",
            container.name,
            "--label",
            f"{LABEL}={self.prefix}",
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--volume",
            f"{self.volume}:/var/lib/bgworker/storage",
            *env_args,
            self.images[role],
            *args,
        )
        self.containers.append(container)
        return container

    def start_api(self) -> Container:
        return self.start("api", "api", "api", "--host", "127.0.0.1", "--port", str(self.api_port))

    def start_worker(self, name: str) -> Container:
        return self.start(
            "worker", name, "worker", "--concurrency", "1", "--heartbeat-file", "/tmp/heartbeat"
        )

    def close(self) -> None:
        for container in self.containers:
            run("docker", "rm", "--force", "--volumes", container.name, check=False)
        run("docker", "volume", "rm", "--force", self.volume, check=False)
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(10)

    def leftovers(self) -> list[str]:
        """Containers and volumes of this run that still exist (after :meth:`close`: none)."""
        label = f"label={LABEL}={self.prefix}"
        containers = run("docker", "ps", "--all", "--quiet", "--filter", label).stdout.split()
        volumes = run("docker", "volume", "ls", "--quiet", "--filter", f"name={self.prefix}")
        return containers + volumes.stdout.split()


def quoted_password() -> str:
    """The password as it appears percent-encoded in a URL (for log checks)."""
    return quote(REDIS_PASSWORD, safe="")
