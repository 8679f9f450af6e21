"""Signed, expiring links to the thumbnails of private jobs.

An ``<img src>`` cannot send an Authorization header, so the links the API hands out for
a private job's thumbnails carry ``?expires=<unix time>&sig=<HMAC-SHA256>`` over the job
id, the width and the expiry, made with ``BGWORKER_URL_SIGNING_KEY``. Anyone holding the
link can load that one thumbnail until it expires; nothing else. Expiries are rounded up
to the hour so that one job's links stay the same (cacheable) for an hour.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from worker.settings import Settings

ROUND_SECONDS = 3600


def _sig(key: str, job_id: str, width: int, expires: int) -> str:
    message = f"{job_id}/{width}/{expires}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:32]


def link(settings: Settings, job_id: str, width: int, now: float | None = None) -> str:
    path = f"/v1/images/{job_id}/{width}"
    if not settings.url_signing_key:
        return path
    at = time.time() if now is None else now
    expires = (int(at + settings.signed_url_seconds) // ROUND_SECONDS + 1) * ROUND_SECONDS
    return f"{path}?expires={expires}&sig={_sig(settings.url_signing_key, job_id, width, expires)}"


def verify(settings: Settings, job_id: str, width: int, expires: str, sig: str) -> bool:
    """Whether a link's signature is ours and has not expired (constant-time compare)."""
    if not settings.url_signing_key or not (expires.isascii() and expires.isdigit()):
        return False
    if int(expires) < time.time():
        return False
    expected = _sig(settings.url_signing_key, job_id, width, int(expires))
    return hmac.compare_digest(expected, sig)
