"""What several routes share: checks of parameters and headers (422 on anything odd), and
the ``202 Accepted`` answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import may_see
from worker.auth import Principal
from worker.errors import Conflict, InvalidRequest, NotFound
from worker.jobs import Job, valid_id
from worker.queues import DEFAULT_QUEUE, QUEUES

MAX_IDEMPOTENCY_KEY = 200


def job_id(request: Request) -> str:
    """The ``{id}`` of the path, checked before anything reaches Redis: 404 for anything
    that is not one of our ids (a key of another kind must never be addressed)."""
    value: str = request.path_params["id"]
    if not valid_id(value):
        raise NotFound(f"no job {value[:80]!r}: job ids are 32 lowercase hex characters")
    return value


def check_owner(principal: Principal, job: Job) -> None:
    """404 for another owner's job: the same answer as for an id that does not exist."""
    if not may_see(principal, job):
        raise NotFound(f"no job {job.id!r}: the id is wrong, or the record expired")


def scoped_key(principal: Principal, route: str, key: str | None) -> str | None:
    """An Idempotency-Key as stored: one owner's keys never meet another's, nor another
    route's."""
    return None if key is None else f"{principal.owner}|{route}|{key}"


def digest(request: dict[str, Any]) -> str:
    """What a request asked for, to tell a retry (same digest) from a reuse of its key."""
    body = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def same_request(job: Job, digest: str, key: str | None) -> None:
    """An Idempotency-Key used before must come with the same request (409 otherwise)."""
    if job.digest and job.digest != digest:
        raise Conflict(
            f"Idempotency-Key {key!r} was used for a different request (another task, "
            "arguments, priority, delay or upload); use a new key for a new request"
        )


def flag(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise InvalidRequest(f"{name} must be true or false, not {value!r}")


def priority(value: str | None) -> str:
    if value is None or value == "":
        return DEFAULT_QUEUE
    if value not in QUEUES:
        raise InvalidRequest(f"priority must be one of {list(QUEUES)}, not {value!r}")
    return value


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key


def widths(value: str | None, allowed: tuple[int, ...]) -> list[int]:
    if value is None or value == "":
        return list(allowed)
    try:
        asked = sorted({int(w) for w in value.split(",") if w.strip()})
    except ValueError:
        raise InvalidRequest(f"widths must be comma-separated integers, not {value!r}") from None
    bad = [w for w in asked if w not in allowed]
    if bad or not asked:
        raise InvalidRequest(
            f"widths {bad or value!r} not offered; choose from {list(allowed)} "
            "(BGWORKER_THUMBNAIL_WIDTHS)"
        )
    return asked


def accepted(job: Job, **more_links: object) -> JSONResponse:
    """``202 Accepted`` for a queued job: its id, state and where to follow it."""
    links = {"self": f"/v1/jobs/{job.id}", "events": f"/v1/jobs/{job.id}/events", **more_links}
    body = {"id": job.id, "state": job.state, "links": links}
    return JSONResponse(body, 202, headers={"Location": f"/v1/jobs/{job.id}"})
