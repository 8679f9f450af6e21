"""Upload → placeholder → thumbnails, and every bad upload refused with nothing queued."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image
from starlette.testclient import TestClient

from api.app import create_app
from tests import factories
from tests.helpers import queue_lengths, wait_for, wait_state
from tests.redis_proxy import RedisProxy
from worker.catalog import THUMBNAILS
from worker.enqueue import submit
from worker.settings import Settings


def _nothing_queued(rclient, settings) -> None:
    assert queue_lengths(rclient) == {"critical": 0, "default": 0, "low": 0}
    assert not list(rclient.scan_iter("bgworker:job:*"))
    storage = settings.storage_dir
    assert not any((storage / "originals").rglob("*")), "no original may be left behind"
    assert not any((storage / "tmp").iterdir()), "no temporary upload may be left behind"


def test_upload_placeholder_then_thumbnails_without_exif(api, start_worker, store, settings):
    # Stored 1600x1200 with orientation 6: displayed as 1200x1600 (portrait).
    body = factories.photo_jpeg(1600, 1200, orientation=6)
    resp = api.post("/v1/images", content=body, headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 202, resp.text
    data = resp.json()
    job_id = data["id"]
    assert data["state"] == "queued"
    assert data["links"]["self"] == f"/v1/jobs/{job_id}"
    assert set(data["links"]["thumbnails"]) == {"320", "640", "1280"}

    # No worker yet: a placeholder, never cached.
    placeholder = api.get(data["links"]["thumbnails"]["640"])
    assert placeholder.status_code == 202
    assert placeholder.headers["content-type"] == "image/webp"
    assert placeholder.headers["cache-control"] == "no-store"
    assert int(placeholder.headers["retry-after"]) >= 1
    assert Image.open(io.BytesIO(placeholder.content)).format == "WEBP"

    start_worker()
    job = wait_state(store, job_id, "succeeded", "failed", timeout=60)
    assert job.state == "succeeded", job.error

    for width in (320, 640, 1280):
        resp = api.get(f"/v1/images/{job_id}/{width}")
        assert resp.status_code == 200
        assert resp.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert resp.headers["etag"]
        img = Image.open(io.BytesIO(resp.content))
        assert img.format == "WEBP"
        expected_width = min(width, 1200)
        assert img.size == (expected_width, round(expected_width * 1600 / 1200))
        assert not img.getexif(), "EXIF (with GPS) must be stripped"
        assert b"Exif" not in resp.content
        again = api.get(
            f"/v1/images/{job_id}/{width}", headers={"If-None-Match": resp.headers["etag"]}
        )
        assert again.status_code == 304

    record = api.get(f"/v1/jobs/{job_id}").json()
    assert record["state"] == "succeeded"
    assert record["progress"] == 100
    assert record["result"]["thumbnails"]["320"]["width"] == 320
    assert (record["result"]["animated"], record["result"]["frames"]) == (False, 1)
    assert api.get(f"/v1/images/{job_id}/999").status_code == 404


def test_multipart_upload_with_chosen_widths_and_priority(api, rclient):
    resp = api.post(
        "/v1/images?widths=320&priority=critical",
        files={"file": ("holiday.jpg", factories.photo_jpeg(400, 300), "image/jpeg")},
    )
    assert resp.status_code == 202, resp.text
    assert list(resp.json()["links"]["thumbnails"]) == ["320"]
    assert queue_lengths(rclient) == {"critical": 1, "default": 0, "low": 0}


def test_idempotency_key_returns_the_same_job(api, rclient):
    headers = {"Idempotency-Key": "upload-42", "Content-Type": "image/png"}
    first = api.post("/v1/images", content=factories.png(), headers=headers)
    second = api.post("/v1/images", content=factories.png(), headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert queue_lengths(rclient)["default"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (factories.SVG, "image/jpeg", 415, "unsupported_media_type"),
        (factories.PDF, "image/png", 415, "unsupported_media_type"),
        (factories.MVG, "image/jpeg", 415, "unsupported_media_type"),
        (b"BM" + b"\0" * 100, "image/bmp", 415, "unsupported_media_type"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "image/png", 422, "invalid_image"),
        (factories.png_claiming(20000, 20000), "image/png", 422, "too_many_pixels"),
        (b"", "image/png", 422, "invalid_request"),
    ],
    ids=["svg", "pdf", "mvg", "bmp", "corrupt-png", "bomb", "empty"],
)
def test_bad_upload_is_refused_and_nothing_is_queued(
    api, rclient, settings, body, content_type, status, code
):
    resp = api.post("/v1/images", content=body, headers={"Content-Type": content_type})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if code in IMAGE_ERRORS:
        # What is wrong in the user's terms, then what to do; never Pillow's own words.
        assert IMAGE_ERRORS[code] in error["message"], error["message"]
        assert not [w for w in PILLOW_WORDS if w in error["message"]], error["message"]
    _nothing_queued(rclient, settings)


# The advice each image error ends with (worker/imaging.py), and words of Pillow's
# messages that must never reach a user.
IMAGE_ERRORS = {
    "unsupported_media_type": "save or export the picture in one of these formats",
    "invalid_image": "save it again as JPEG, PNG, WebP or GIF, and upload that file",
    "too_many_pixels": "scale the picture down",
}
PILLOW_WORDS = ("truncated", "decoder", "cannot identify", "broken data stream", "PIL")


def test_too_large_upload_is_refused_early(api, rclient, settings):
    limit = settings.max_upload_bytes
    resp = api.post("/v1/images", content=b"\xff\xd8\xff" + b"\0" * limit)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"

    # Streamed without a Content-Length: counted as it arrives.
    def chunks():
        yield b"\xff\xd8\xff"
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536

    resp = api.post("/v1/images", content=chunks())
    assert resp.status_code == 413
    resp = api.post(
        "/v1/images", files={"file": ("big.jpg", b"\xff\xd8\xff" + b"\0" * limit, "image/jpeg")}
    )
    assert resp.status_code == 413
    _nothing_queued(rclient, settings)


def test_bad_query_parameters_are_refused_before_the_body_is_read(api, rclient, settings):
    for query in ("widths=100", "widths=abc", "priority=urgent"):
        resp = api.post(f"/v1/images?{query}", content=factories.png())
        assert resp.status_code == 422, query
        assert resp.json()["error"]["code"] == "invalid_request"
    resp = api.post("/v1/images", files={"photo": ("x.png", factories.png(), "image/png")})
    assert resp.status_code == 422
    _nothing_queued(rclient, settings)


def test_corrupt_jpeg_fails_in_the_worker_with_a_clear_error(api, start_worker, store):
    good = factories.photo_jpeg(800, 600)
    truncated = good[: len(good) // 3]
    resp = api.post("/v1/images", content=truncated)
    assert resp.status_code == 202, resp.text
    worker = start_worker()
    job = wait_state(store, resp.json()["id"], "failed", "succeeded", "dead")
    assert job.state == "failed"
    assert job.attempts == 1, "a corrupt image is not retried"
    assert job.error is not None
    assert job.error["code"] == "invalid_image"
    assert job.error["message"] == (
        "the file is not a complete JPEG: it ends before the picture does (cut short, as by "
        "an interrupted upload or copy); upload the whole file again"
    )
    gone = api.get(f"/v1/images/{job.id}/320")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "thumbnail_unavailable"

    # A user's bad file is not the worker's error: one WARNING line naming the job and
    # the reason, no traceback, nothing at ERROR (Celery adds its one-line INFO summary).
    wait_for(lambda: "raised expected" in worker.output, timeout=10, what="Celery's summary")
    time.sleep(0.5)  # anything logged after it
    log = worker.output
    assert "Traceback" not in log, log
    assert not [line for line in log.splitlines() if "ERROR" in line or "CRITICAL" in line], log
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, log
    assert f"job {job.id} failed (invalid_image): the file is not a complete JPEG" in warnings[0]
    infos = [line for line in log.splitlines() if job.id in line and "WARNING" not in line]
    assert [line.split("] ", 1)[1].split(":")[0] for line in infos] == [
        f"Task images.thumbnails[{job.id}] received",
        f"Task images.thumbnails[{job.id}] raised expected",
    ], log


def test_an_animation_gives_a_still_of_its_first_frame_and_says_so(api, start_worker, store):
    resp = api.post("/v1/images?widths=320", content=factories.animated("GIF"))
    assert resp.status_code == 202, resp.text
    start_worker()
    job = wait_state(store, resp.json()["id"], "succeeded", "failed", "dead")
    assert job.state == "succeeded", job.error
    assert job.result is not None
    assert (job.result["animated"], job.result["frames"]) == (True, 3)
    thumb = Image.open(io.BytesIO(api.get(f"/v1/images/{job.id}/320").content))
    assert getattr(thumb, "n_frames", 1) == 1
    r, g, b = thumb.convert("RGB").getpixel((60, 45))
    assert r > 200 and g < 50 and b < 50, "the first frame (red)"


def test_streamed_upload_is_not_read_past_the_limit(api, settings):
    """Drive the ASGI app directly to count what it pulls from the client."""
    limit = settings.max_upload_bytes
    chunk = b"\0" * 65536
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        pulled += 1
        more = pulled < 4 * limit // len(chunk)
        return {
            "type": "http.request",
            "body": b"\xff\xd8\xff" if pulled == 1 else chunk,
            "more_body": more,
        }

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/images",
        "raw_path": b"/v1/images",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/jpeg")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": dict(api.app_state),
    }
    # On the loop the app's lifespan (and its Redis connections) run on.
    api.portal.call(api.app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert pulled * len(chunk) <= limit + 2 * len(chunk), "stopped reading at the limit"


def test_upload_whose_enqueue_outcome_is_unknown_keeps_its_original(
    redis_server, env, start_worker, store, celery_app
):
    """The create script ran but its reply was lost: the client got 503 and retries with
    its key, and receives that job, which must find its original to run."""
    # Loaded before the reply loss: a first EVALSHA would otherwise be refused unrun.
    submit(store, celery_app, "debug.noop", {}, "low")
    proxy = RedisProxy(redis_server.port)
    settings = Settings.from_env({**env, "BGWORKER_REDIS_URL": proxy.url})
    headers = {"Content-Type": "image/jpeg", "Idempotency-Key": "upload-1"}
    body = factories.photo_jpeg(640, 480)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as api:
            proxy.drop_script_replies = True
            first = api.post("/v1/images", content=body, headers=headers)
            proxy.drop_script_replies = False
            assert first.status_code == 503, first.text
            [job] = [
                j
                for key in store.client.scan_iter("bgworker:job:*")
                if not key.endswith(b":events")
                and (j := store.get(key.decode().rsplit(":", 1)[1])) is not None
                and j.kind == THUMBNAILS
            ]
            assert job.state == "queued", "the script ran though its reply was lost"

            start_worker()
            again = api.post("/v1/images", content=body, headers=headers)
            assert again.status_code == 202, again.text
            assert again.json()["id"] == job.id
            done = wait_state(store, job.id, "succeeded", "failed", "dead")
            assert done.state == "succeeded", done.error
    finally:
        proxy.close()


def test_upload_refused_while_redis_is_down_leaves_no_original(api, redis_server, settings):
    """No job was made: once Redis answers that, the stored original goes."""
    body = factories.photo_jpeg(320, 240)
    redis_server.stop()
    try:
        resp = api.post("/v1/images", content=body, headers={"Content-Type": "image/jpeg"})
        assert resp.status_code == 503, resp.text
        originals = settings.storage_dir / "originals"
        assert [p for p in originals.rglob("*") if p.is_file()], "kept while unknown"
    finally:
        redis_server.start()
    wait_for(
        lambda: not [p for p in originals.rglob("*") if p.is_file()],
        timeout=30,
        what="the orphaned original to be deleted",
    )
