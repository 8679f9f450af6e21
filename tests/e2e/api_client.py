"""What a user of a running installation sees, over plain HTTP: the client both e2e suites use.

The container suite points it at an API container on loopback, the kind suite at a
``kubectl port-forward``. It knows nothing of Docker or Kubernetes, and nothing of
bgworker's internals: only the documented routes (``/v1/jobs``, ``/v1/images``, the SSE
stream, ``/metrics``), and the photo ``bgworker smoke`` uploads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import httpx

from worker import smoke

FAILED_STATES = frozenset({"failed", "dead", "cancelled"})


class Api:
    """A bgworker API at ``base_url`` (``http://127.0.0.1:PORT``)."""

    def __init__(self, base_url: str, timeout: float = 30.0, token: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        # The installation's API key (BGWORKER_ADMIN_KEY, or the chart's Secret).
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=self.headers)

    def close(self) -> None:
        self.http.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200 (the API is up and reaches Redis)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                response = self.http.get("/readyz")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.5)
        raise AssertionError(f"API at {self.base_url} not ready after {timeout:.0f} s: {last}")

    # --- submitting ---------------------------------------------------------------------

    def submit(self, task: str, args: dict[str, Any], priority: str = "default") -> str:
        response = self.http.post(
            "/v1/jobs", json={"task": task, "args": args, "priority": priority}
        )
        assert response.status_code == 202, f"POST /v1/jobs: {response.status_code} {response.text}"
        return str(response.json()["id"])

    def sleep_jobs(self, count: int, seconds: float, priority: str = "default") -> list[str]:
        """``count`` ``debug.sleep`` jobs (the installation needs BGWORKER_DEBUG_TASKS=1)."""
        return [self.submit("debug.sleep", {"seconds": seconds}, priority) for _ in range(count)]

    def upload(self, image: bytes, content_type: str = "image/jpeg") -> str:
        response = self.http.post(
            "/v1/images", content=image, headers={"Content-Type": content_type}
        )
        assert response.status_code == 202, (
            f"POST /v1/images: {response.status_code} {response.text}"
        )
        return str(response.json()["id"])

    # --- reading ------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, f"GET job {job_id}: {response.status_code}"
        data: dict[str, Any] = response.json()
        return data

    def wait_finished(self, ids: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Poll until every job is in a final state; the records by id.

        Fails naming the jobs still open (and their states) when ``timeout`` runs out.
        """
        pending = list(ids)
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while pending:
            still = []
            for job_id in pending:
                job = self.job(job_id)
                if job["state"] == "succeeded" or job["state"] in FAILED_STATES:
                    done[job_id] = job
                else:
                    still.append(job)
            pending = [job["id"] for job in still]
            if pending and time.monotonic() > deadline:
                states = {job["id"]: (job["state"], job["progress"]) for job in still}
                raise AssertionError(
                    f"{len(pending)} job(s) not finished after {timeout:.0f} s "
                    f"(id: (state, progress)): {states}"
                )
            if pending:
                time.sleep(0.5)
        return done

    def events(self, job_id: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every record the job's SSE stream sends, up to its final one."""
        records: list[dict[str, Any]] = []
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
            assert response.status_code == 200, f"events of {job_id}: {response.status_code}"
            for line in response.iter_lines():
                if line.startswith("data: "):
                    records.append(json.loads(line[len("data: ") :]))
        return records

    def thumbnail(self, job_id: str, width: int) -> httpx.Response:
        return self.http.get(f"/v1/images/{job_id}/{width}")

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by name and labels: ``bgworker_jobs_total{state="succeeded"}``."""
        response = self.http.get("/metrics")
        assert response.status_code == 200
        samples = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def succeeded_total(self) -> int:
        return int(self.metrics().get('bgworker_jobs_total{state="succeeded"}', 0))

    # --- verdicts -----------------------------------------------------------------------

    def assert_each_succeeded_once(self, ids: Iterable[str], timeout: float) -> None:
        """Every job ends ``succeeded``, and its event stream shows that exactly once.

        A lost job times out in :meth:`wait_finished`; a job whose outcome was recorded
        twice (two bodies both reporting success) shows two ``succeeded`` events.
        """
        ids = list(ids)
        finished = self.wait_finished(ids, timeout)
        wrong = {i: (j["state"], j["error"]) for i, j in finished.items()}
        wrong = {i: outcome for i, outcome in wrong.items() if outcome[0] != "succeeded"}
        assert not wrong, f"jobs that did not succeed: {wrong}"
        for job_id in ids:
            states = [record["state"] for record in self.events(job_id)]
            assert states.count("succeeded") == 1, f"job {job_id} went through {states}"


def photo(width: int = 1600, height: int = 1200) -> bytes:
    """A JPEG with structure in it: the one ``bgworker smoke`` uploads, larger."""
    return smoke.photo(width, height)


def is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
