"""Storage lifecycle: originals go once their job has ended, the janitor removes the rest.

Real Redis, real workers, the real app with its lifespan (which runs the janitor).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from tests import factories
from tests.helpers import wait_for, wait_state
from worker.janitor import Janitor
from worker.jobs import new_id
from worker.settings import Settings
from worker.storage import Storage

TERMINAL = ("succeeded", "failed", "dead", "cancelled")


def _originals(settings: Settings) -> list[Path]:
    return [p for p in (settings.storage_dir / "originals").rglob("*") if p.is_file()]


@pytest.mark.slow
def test_200_uploads_with_invalid_and_cancelled_ones_leave_no_original_behind(
    api, start_worker, store, settings
):
    good = factories.png(64, 48)
    jpeg = factories.photo_jpeg(400, 300)
    truncated = jpeg[: len(jpeg) // 3]  # passes the API's header check, fails in the worker
    ids: dict[str, str] = {}
    for i in range(200):
        kind = "invalid" if i % 4 == 0 else "good"
        resp = api.post("/v1/images?widths=320", content=truncated if kind == "invalid" else good)
        assert resp.status_code == 202, resp.text
        ids[resp.json()["id"]] = kind
    cancelled = list(ids)[1:20:4]  # a few good ones, cancelled while queued
    for job_id in cancelled:
        assert store.cancel(job_id).state == "cancelled"  # what DELETE /v1/jobs/{id} does
        ids[job_id] = "cancelled"
    assert len(_originals(settings)) == 200, "every upload keeps its original while queued"

    start_worker("--concurrency", "2")
    outcomes = {"good": "succeeded", "invalid": "failed", "cancelled": "cancelled"}
    for job_id, kind in ids.items():
        job = wait_state(store, job_id, *TERMINAL, timeout=120)
        assert job.state == outcomes[kind], (kind, job)
    # A cancelled job's message is dropped by the worker, which deletes its original then.
    wait_for(lambda: not _originals(settings), timeout=15, what="no original left")
    for job_id, kind in ids.items():
        thumbnail = settings.storage_dir / "thumbnails" / job_id[:2] / job_id / "320.webp"
        assert thumbnail.exists() == (kind == "good"), (kind, job_id)
        if kind == "good":  # the thumbnail is still served: only the original went
            assert api.get(f"/v1/images/{job_id}/320").status_code == 200


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _original(storage: Storage, job_id: str, age: float) -> Path:
    path = storage.original(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return _aged(path, age)


def _thumbnails(storage: Storage, job_id: str, age: float) -> Path:
    path = storage.thumbnail(job_id, 320)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    _aged(path, age)
    return _aged(path.parent, age)


def test_janitor_removes_only_old_files_without_a_record_in_bounded_batches(
    store, rclient, settings
):
    storage = Storage(settings.storage_dir)
    storage.ensure()
    hour = 3600.0
    live = store.create("images.thumbnails", {"widths": [320]}, "default")[0].id
    keep = [
        _original(storage, live, 3 * hour),  # its job still exists (queued)
        _thumbnails(storage, live, 3 * hour),
        _original(storage, new_id(), 60),  # young: its job may be being created right now
        _thumbnails(storage, new_id(), 60),
    ]
    young_tmp = storage.tmp / "upload-young"
    young_tmp.write_bytes(b"x")
    keep.append(young_tmp)
    orphans = [_original(storage, new_id(), 2 * hour) for _ in range(5)]
    orphans += [_thumbnails(storage, new_id(), 2 * hour) for _ in range(5)]
    old_tmp = storage.tmp / "upload-old"
    old_tmp.write_bytes(b"x")
    _aged(old_tmp, 2 * hour)
    orphans.append(old_tmp)

    janitor = Janitor(storage, rclient, grace_seconds=hour, batch=3)
    first = janitor.run_once()
    assert first <= 3 + 1, "one batch of entries (and the temporary files) per pass"
    removed = first
    for _ in range(10):  # 14 entries, 3 a pass: the walk resumes where it stopped
        removed += janitor.run_once()
    assert removed == len(orphans)
    assert not [p for p in orphans if p.exists()]
    assert all(p.exists() for p in keep)

    # Once the job's record has expired, its files go too: they expire together.
    rclient.delete(f"bgworker:job:{live}")
    for _ in range(6):
        janitor.run_once()
    assert not keep[0].exists() and not keep[1].exists()


def test_the_api_runs_the_janitor(env):
    settings = Settings.from_env({**env, "BGWORKER_JANITOR_INTERVAL_SECONDS": "1"})
    storage = Storage(settings.storage_dir)
    storage.ensure()
    orphan = _original(storage, new_id(), 2 * 3600)
    thumbs = _thumbnails(storage, new_id(), 2 * 3600)
    with TestClient(create_app(settings)):
        wait_for(lambda: not orphan.exists() and not thumbs.exists(), timeout=10)
