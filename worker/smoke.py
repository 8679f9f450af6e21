"""``bgworker smoke URL``: prove a running installation works, end to end, over HTTP.

It uploads a small generated photo to the API, waits for the job to succeed, and fetches
one thumbnail: API, Redis, a worker and the shared storage all had to do their part. The
chart's ``helm test`` hook runs it; operators can run it after any change. Standard
library only (plus Pillow, which every bgworker image has), so it runs anywhere the
package is installed.
"""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from typing import Any

from worker.errors import SmokeFailed

TERMINAL_FAILURES = {"failed", "dead", "cancelled"}


def run(base_url: str, timeout: float = 120.0, log: Any = print, api_key: str = "") -> str:
    """Upload, wait, fetch; return the job id, or raise :class:`SmokeFailed` saying where.

    ``api_key`` is sent as ``Authorization: Bearer`` (a key with jobs:write and jobs:read).
    """
    base = base_url.rstrip("/")
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def request(method: str, url: str, body: bytes | None = None, **kw: Any) -> bytes:
        return _request(method, url, body, {**kw.pop("headers", {}), **auth}, **kw)

    accepted = request(
        "POST",
        f"{base}/v1/images?priority=critical",
        photo(),
        headers={"Content-Type": "image/jpeg"},
        expect=202,
    )
    job = json.loads(accepted)
    log(f"submitted thumbnail job {job['id']}")
    deadline = time.monotonic() + timeout
    state = job["state"]
    while state != "succeeded":
        if state in TERMINAL_FAILURES:
            raise SmokeFailed(f"job {job['id']} ended {state}: {job.get('error')}")
        if time.monotonic() > deadline:
            raise SmokeFailed(
                f"job {job['id']} still {state} after {timeout:.0f} s: are workers running "
                "(kubectl get deploy,scaledobject) and is KEDA installed?"
            )
        time.sleep(0.5)
        job = json.loads(request("GET", f"{base}/v1/jobs/{job['id']}", expect=200))
        state = job["state"]
    width = min(job["result"]["thumbnails"], key=int) if job.get("result") else None
    if width is None:
        raise SmokeFailed(f"job {job['id']} succeeded without thumbnails: {job}")
    thumb = request("GET", f"{base}/v1/images/{job['id']}/{width}", expect=200)
    if not (thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP"):
        raise SmokeFailed(f"thumbnail {width} of job {job['id']} is not a WebP image")
    log(f"job {job['id']} succeeded; thumbnail {width} is {len(thumb)} bytes of WebP")
    return str(job["id"])


def photo(width: int = 640, height: int = 480) -> bytes:
    """A JPEG with some structure in it (a gradient and a disc), generated, not shipped."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    box = (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    ImageDraw.Draw(image).ellipse(box, fill=(200, 60, 40))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    expect: int,
) -> bytes:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, data = resp.status, bytes(resp.read())
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise SmokeFailed(f"{method} {url}: cannot reach the API: {exc}") from None
    if status != expect:
        raise SmokeFailed(f"{method} {url}: expected {expect}, got {status}: {data[:300]!r}")
    return data
