"""The real images, run as a user runs them: redis-server, the API and two workers in Docker.

What only the built containers can show: the image's entrypoint makes the Celery master
PID 1, so ``docker stop`` (SIGTERM, as the kubelet sends it) is a warm shutdown that
finishes the job in hand and exits 0; a ``docker kill`` loses nothing; the processes run
as uid 10001 on a read-only root; an upload crosses the shared volume and comes back as
WebP; the runtime images hold no compiler. Needs Docker (installed and started when the
tests run as root); skipped with the reason otherwise, a failure under ``CI=true``. About
a minute once the images are built.
"""

from __future__ import annotations

import io
import json
import re
import secrets
from collections.abc import Iterator

import pytest
from PIL import Image

from tests.e2e.api_client import Api, is_webp, photo
from tests.e2e.commands import run
from tests.e2e.containers import REDIS_PASSWORD, Container, Stack, quoted_password
from tests.e2e.docker_images import image_size
from tests.helpers import wait_for

# The first test also pays for the session fixtures: installing and starting Docker, a
# debootstrap base and two image builds take minutes on a fresh machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Short limits keep a redelivery after SIGKILL (visibility timeout = longest hard time
# limit + margin = 15 + 1 s; the thumbnail task's own 90 s limit is lowered too) within a
# test's patience.
SHUTDOWN_TIMEOUT = 8
ADMIN_KEY = secrets.token_hex(24)
ENV = {
    "BGWORKER_DEBUG_TASKS": "1",
    # Keys on, as in production: the client sends this admin key.
    "BGWORKER_ADMIN_KEY": ADMIN_KEY,
    "BGWORKER_STATE_DIR": "/tmp/bgworker",
    "BGWORKER_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
    "BGWORKER_SOFT_TIME_LIMIT": "14",
    "BGWORKER_TIME_LIMIT": "15",
    "BGWORKER_TASK_TIME_LIMITS": '{"images.thumbnails": [14, 15]}',
    "BGWORKER_VISIBILITY_MARGIN": "1",
    "BGWORKER_RESTORE_INTERVAL": "1",
    "BGWORKER_LOG_LEVEL": "INFO",
}
# What the chart gives a worker beyond its shutdown timeout (terminationGraceMarginSeconds).
GRACE = SHUTDOWN_TIMEOUT + 20
COMPILERS = ("cc", "c++", "gcc", "g++", "clang", "clang++", "tcc", "x86_64-linux-gnu-gcc")


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(images, ENV, tmp_path_factory.mktemp("stack"))
    try:
        stack.start_redis()
        stack.start_api()
        stack.start_worker("worker-a")
        stack.start_worker("worker-b")
        yield stack
    finally:
        stack.close()
    assert stack.leftovers() == [], "the suite left containers or volumes behind"


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    client = Api(stack.api_url, token=ADMIN_KEY)
    client.wait_ready(timeout=60)
    yield client
    client.close()


@pytest.fixture
def workers(stack: Stack, api: Api) -> list[Container]:
    """Both workers, running and consuming (a test that stopped one gets it back)."""
    found = [c for c in stack.containers if "worker" in c.name]
    for worker in found:
        if not worker.running:
            worker.start()
        worker.wait_ready()
    return found


def _finished_in(worker: Container, job_id: str) -> int:
    """How many times ``worker``'s Celery logged the job's body as having returned."""
    return len(re.findall(rf"Task debug\.sleep\[{job_id}\] succeeded", worker.logs()))


def _running(api: Api, ids: list[str]) -> bool:
    return all(api.job(i)["state"] == "running" for i in ids)


def test_upload_becomes_webp_thumbnails(api: Api, workers: list[Container]) -> None:
    job_id = api.upload(photo(1600, 1200))
    job = api.wait_finished([job_id], timeout=60)[job_id]
    assert job["state"] == "succeeded", job
    widths = sorted(int(w) for w in job["result"]["thumbnails"])
    assert widths == [320, 640, 1280]
    for width in widths:
        response = api.thumbnail(job_id, width)
        assert response.status_code == 200, response.text
        assert is_webp(response.content)
        assert Image.open(io.BytesIO(response.content)).size == (width, width * 3 // 4)


def test_processes_run_as_the_image_user_on_a_read_only_root(
    stack: Stack, workers: list[Container]
) -> None:
    for container in stack.containers:
        uids = container.process_uids()
        # A worker has its master and a pool process; the API one uvicorn process.
        assert len(uids) >= (2 if "worker" in container.name else 1), uids
        assert all(ids == "10001 10001 10001 10001" for ids in uids.values()), uids
        assert container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
        # The image's user owns its home: only the read-only root keeps it from writing.
        written = container.exec("touch", "/var/lib/bgworker/x")
        assert "Read-only file system" in written.stderr, written


def test_the_password_is_used_and_never_logged(stack: Stack, api: Api) -> None:
    assert api.job(api.submit("debug.noop", {}))["state"] in {"queued", "running", "succeeded"}
    for container in stack.containers:
        logs = container.logs()
        assert REDIS_PASSWORD not in logs and quoted_password() not in logs, container.name


def test_docker_stop_mid_job_finishes_the_job_and_exits_0(
    api: Api, workers: list[Container]
) -> None:
    """SIGTERM (``docker stop``, a pod deletion) is a warm shutdown: the job in hand ends."""
    ids = api.sleep_jobs(2, seconds=5)  # one for each worker (prefetch 1, concurrency 1)
    wait_for(lambda: _running(api, ids), timeout=30, what="both jobs running")
    stopped, other = workers
    took = stopped.stop(grace=GRACE)
    assert stopped.exit_code == 0, stopped.logs()[-3000:]
    assert took < GRACE, f"docker stop took {took:.0f} s: the grace ran out (SIGKILL)"
    api.assert_each_succeeded_once(ids, timeout=30)
    # Each job ran once, start to finish, in the worker that took it: nothing requeued.
    assert all(api.job(i)["attempts"] == 1 for i in ids)
    assert sorted(_finished_in(w, i) for w in workers for i in ids) == [0, 0, 1, 1]
    assert sum(_finished_in(stopped, i) for i in ids) == 1, "the stopped worker's job"


def test_docker_stop_past_the_shutdown_timeout_requeues_the_job(
    api: Api, stack: Stack, workers: list[Container]
) -> None:
    """A job longer than BGWORKER_SHUTDOWN_TIMEOUT goes back to its queue and runs again."""
    long_job, other_job = api.sleep_jobs(2, seconds=SHUTDOWN_TIMEOUT + 4)
    wait_for(lambda: _running(api, [long_job, other_job]), timeout=30, what="both running")
    stopped, survivor = workers
    took = stopped.stop(grace=GRACE)
    assert took < GRACE, f"docker stop took {took:.0f} s: the grace ran out (SIGKILL)"
    assert stopped.exit_code == 0, stopped.logs()[-3000:]
    assert "Restoring 1 unacknowledged message(s)" in stopped.logs()
    # The interrupted job shows queued again (not a stale running) while it waits.
    states = sorted(api.job(i)["state"] for i in (long_job, other_job))
    assert states == ["queued", "running"], states
    stopped.start()  # somebody has to run the requeued job while the survivor is busy
    api.assert_each_succeeded_once([long_job, other_job], timeout=2 * SHUTDOWN_TIMEOUT + 30)
    assert sorted(api.job(i)["attempts"] for i in (long_job, other_job)) == [1, 2]


def test_docker_kill_mid_job_loses_nothing(api: Api, workers: list[Container]) -> None:
    """SIGKILL gives no warning: the job comes back after the visibility timeout."""
    ids = api.sleep_jobs(2, seconds=4)
    wait_for(lambda: _running(api, ids), timeout=30, what="both jobs running")
    killed, survivor = workers
    killed.kill()
    assert killed.wait_exited() == 137  # 128 + SIGKILL
    # Only the survivor is left: it restores the dead worker's message once the visibility
    # timeout (16 s) has passed and runs it.
    api.assert_each_succeeded_once(ids, timeout=60)
    attempts = sorted(api.job(i)["attempts"] for i in ids)
    assert attempts == [1, 2], attempts
    assert sum(_finished_in(survivor, i) for i in ids) == 2


def _compilers(image: str, *, plant_gcc: bool = False) -> list[str]:
    """Compilers (and pip) found in ``image``; ``plant_gcc`` puts a fake gcc on PATH first."""
    probe = (
        "import glob, json, shutil; "
        f"found = [shutil.which(n) for n in {list(COMPILERS)!r} if shutil.which(n)]; "
        "found += glob.glob('/usr/bin/*-linux-gnu-gcc*') + glob.glob('/opt/venv/bin/pip*'); "
        "print(json.dumps(found))"
    )
    plant = "mkdir -p /tmp/fake && cp /bin/true /tmp/fake/gcc && PATH=/tmp/fake:$PATH; "
    script = (plant if plant_gcc else "") + 'exec /opt/venv/bin/python -c "$0"'
    out = run("docker", "run", "--rm", "--entrypoint", "sh", image, "-c", script, probe)
    found: list[str] = json.loads(out.stdout)
    return found


def test_runtime_images_hold_no_compiler_and_no_pip(images: dict[str, str]) -> None:
    for ref in images.values():
        assert _compilers(ref) == [], ref
    # The probe is not blind: a gcc on PATH is found.
    assert _compilers(images["worker"], plant_gcc=True) == ["/tmp/fake/gcc"]


def test_bgworker_adds_under_80_mb_to_its_base(images: dict[str, str], base_image: str) -> None:
    """The venv is about 55 MB; a build tool or a cache left in the runtime would show here."""
    for ref in images.values():
        added = image_size(ref) - image_size(base_image)
        assert added < 80e6, f"{ref} adds {added / 1e6:.0f} MB to {base_image}"
