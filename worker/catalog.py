"""The tasks a client may name in ``POST /v1/jobs``, and how their arguments are checked.

The API validates against this catalogue and enqueues by name; it never imports task
bodies. A name missing here (or a debug task while ``BGWORKER_DEBUG_TASKS`` is off) is
refused with 422 before anything is queued.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import InvalidRequest
from worker.settings import Settings

THUMBNAILS = "images.thumbnails"
DEBUG_SLEEP = "debug.sleep"
DEBUG_FLAKY = "debug.flaky"
DEBUG_NOOP = "debug.noop"

Validator = Callable[[Mapping[str, Any], Settings], dict[str, Any]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    validate: Validator
    debug_only: bool = False


def _only(args: Mapping[str, Any], allowed: set[str], task: str) -> None:
    extra = sorted(set(args) - allowed)
    if extra:
        raise InvalidRequest(
            f"{task} does not take argument(s) {extra}; it takes {sorted(allowed)}"
        )


def _sleep_args(args: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    _only(args, {"seconds", "ignore_soft_limit"}, DEBUG_SLEEP)
    seconds = args.get("seconds", 1)
    stubborn = args.get("ignore_soft_limit", False)
    if not isinstance(stubborn, bool):
        raise InvalidRequest("debug.sleep: 'ignore_soft_limit' must be true or false")
    limit = settings.limits_for(DEBUG_SLEEP).soft
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 <= seconds < limit
    ):
        raise InvalidRequest(
            "debug.sleep: 'seconds' must be a number from 0 to below "
            f"its soft time limit ({limit} s)"
        )
    return {"seconds": seconds, "ignore_soft_limit": stubborn}


def _flaky_args(args: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    _only(args, {"fail_times", "permanent"}, DEBUG_FLAKY)
    fail_times = args.get("fail_times", 1)
    permanent = args.get("permanent", False)
    if isinstance(fail_times, bool) or not isinstance(fail_times, int) or fail_times < 0:
        raise InvalidRequest("debug.flaky: 'fail_times' must be a non-negative integer")
    if not isinstance(permanent, bool):
        raise InvalidRequest("debug.flaky: 'permanent' must be true or false")
    return {"fail_times": fail_times, "permanent": permanent}


def _noop_args(args: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    _only(args, set(), DEBUG_NOOP)
    return {}


CATALOG: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(DEBUG_SLEEP, _sleep_args, debug_only=True),
        TaskSpec(DEBUG_FLAKY, _flaky_args, debug_only=True),
        TaskSpec(DEBUG_NOOP, _noop_args, debug_only=True),
    )
}


def submittable(settings: Settings) -> dict[str, TaskSpec]:
    """Tasks ``POST /v1/jobs`` accepts under these settings."""
    return {n: s for n, s in CATALOG.items() if settings.debug_tasks or not s.debug_only}


def validate(task: str, args: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    available = submittable(settings)
    spec = available.get(task)
    if spec is None:
        hint = "" if settings.debug_tasks else " (debug.* tasks need BGWORKER_DEBUG_TASKS=1)"
        raise InvalidRequest(
            f"unknown task {task!r}; registered tasks are {sorted(available) or 'none'}{hint}"
        )
    return spec.validate(args, settings)
