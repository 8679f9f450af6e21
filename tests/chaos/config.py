"""The soak's knobs (mode, seed, duration, jobs), the settings its processes run with,
and every wait bound derived from those settings.

Nothing here waits on a guess: each bound is a sum of named parts, each part a setting
or a constant of the code it waits for, so a failure can say which wait ran out and why
it was long enough for a correct system.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from api.scheduler import INTERVAL_SECONDS as PROMOTER_INTERVAL
from worker.enqueue import promote_due
from worker.settings import Settings
from worker.shutdown import REQUEUE_WATCH_SECONDS

# Fault kinds and the modes that draw from them. CI runs the list ("Done means":
# mixed, Redis kill, Redis restart, worker kill, pool-child kill); the others are there
# for runs by hand.
KINDS: tuple[str, ...] = (
    "worker-term",
    "worker-kill",
    "child-kill",
    "redis-kill",
    "redis-restart",
    "api-kill",
)
MODES: dict[str, tuple[str, ...]] = {"mixed": KINDS, **{kind: (kind,) for kind in KINDS}}
CI_MODES: tuple[str, ...] = ("mixed", "redis-kill", "redis-restart", "worker-kill", "child-kill")

# Short limits so that a SIGKILLed worker's job comes back within seconds: the visibility
# timeout is the longest hard limit + the margin = 10 + 4 s. The thumbnails task has its
# own 90 s hard limit by default, which would set the visibility timeout, so it is
# lowered too. The shutdown timeout lies between the short jobs and the long ones
# (tests/chaos/workload.py), so a SIGTERM finishes the one and requeues the other.
SOAK_ENV: dict[str, str] = {
    "BGWORKER_DEBUG_TASKS": "1",
    "BGWORKER_SOFT_TIME_LIMIT": "8",
    "BGWORKER_TIME_LIMIT": "10",
    "BGWORKER_TASK_TIME_LIMITS": '{"images.thumbnails": [8, 10]}',
    "BGWORKER_VISIBILITY_MARGIN": "4",
    "BGWORKER_RESTORE_INTERVAL": "1",
    "BGWORKER_SHUTDOWN_TIMEOUT": "3",
    "BGWORKER_MAX_RETRIES": "2",
    "BGWORKER_RETRY_BACKOFF_MAX": "2",
    # INFO: the workers' "Task …[id] succeeded" lines are how bodies run to completion
    # are counted.
    "BGWORKER_LOG_LEVEL": "INFO",
}

# The promoter claims due jobs for this long; an API killed between a claim and its
# publish leaves the job to the next claim after it (worker/enqueue.py, promote_due).
PROMOTER_LEASE = float(inspect.signature(promote_due).parameters["lease"].default)

# The API's reaper queues a job whose message was lost in transit (popped, never
# registered in unacked) again "within about three intervals" of the restore interval
# (api/scheduler.py, reap_forever).
REAPER_INTERVALS = 3

# Process start-up (a Celery worker takes 2-5 s of CPU to be ready) and scheduling noise
# on a loaded 2-core machine. The only constant here that is not read from the code.
SLACK_SECONDS = 15.0

# After the faults, submissions still being retried get this long to be accepted: the
# API and Redis are both up by then, so one round trip is all a submission needs.
SUBMIT_GRACE_SECONDS = 30.0


class ConfigError(ValueError):
    """A CHAOS_* variable or command-line value that cannot be used."""


@dataclass(frozen=True)
class ChaosConfig:
    mode: str = "mixed"
    seed: int = 1
    seconds: float = 60.0
    jobs: int = 200
    workers: int = 3
    concurrency: int = 2
    write_figures: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {sorted(MODES)}")
        if self.seconds <= 0 or self.jobs <= 0 or self.workers <= 0 or self.concurrency <= 0:
            raise ConfigError("seconds, jobs, workers and concurrency must be positive")

    @property
    def kinds(self) -> tuple[str, ...]:
        return MODES[self.mode]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ChaosConfig:
        """``CHAOS_MODE``, ``CHAOS_SEED``, ``CHAOS_SECONDS``, ``CHAOS_JOBS`` (default: 10 jobs
        every 3 s of faults), ``CHAOS_WORKERS``, ``CHAOS_CONCURRENCY``,
        ``CHAOS_WRITE_FIGURES=1``; ``overrides`` (not None) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        parsers: dict[str, type] = {
            "mode": str,
            "seed": int,
            "seconds": float,
            "jobs": int,
            "workers": int,
            "concurrency": int,
        }
        for name, parse in parsers.items():
            raw = env.get(f"CHAOS_{name.upper()}", "").strip()
            if raw:
                try:
                    values[name] = parse(raw)
                except ValueError:
                    raise ConfigError(
                        f"CHAOS_{name.upper()}={raw!r} is not a {parse.__name__}"
                    ) from None
        values["write_figures"] = env.get("CHAOS_WRITE_FIGURES", "").strip() == "1"
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "jobs" not in values:
            values["jobs"] = max(1, round(float(str(values.get("seconds", 60.0))) * 10 / 3))
        return cls(**values)  # type: ignore[arg-type]


def process_env(state_dir: Path) -> dict[str, str]:
    """The ``BGWORKER_*`` environment of the API and every worker of one soak, but for the
    Redis URL, which :class:`tests.chaos.processes.System` adds for the Redis it starts."""
    env = {**SOAK_ENV, "BGWORKER_STATE_DIR": str(state_dir)}
    if "auth" in {f.name for f in dataclasses.fields(Settings)}:
        # The soak's client is the anonymous admin, as in tests/conftest.py's TEST_ENV: it
        # tests delivery, not API keys. Set only where the setting exists, since an
        # unknown BGWORKER_* name is refused.
        env["BGWORKER_AUTH"] = "off"
    return env


def soak_settings(env: Mapping[str, str]) -> Settings:
    """The settings the processes will read: the same parser, so its cross-checks run here
    first and a bad combination fails before anything starts."""
    return Settings.from_env(env)


@dataclass(frozen=True)
class Bound:
    """A wait bound as the sum of named parts (seconds)."""

    parts: dict[str, float]

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = " + ".join(f"{name} {value:.1f}" for name, value in self.parts.items())
        return f"{self.seconds:.0f} s = {parts}"


def terminal_bound(
    settings: Settings,
    *,
    longest_job: float,
    longest_delay: float,
    remaining_work: float,
    slots: int,
    api_killed: bool,
) -> Bound:
    """How long after the system is whole again every job must have ended.

    The worst chain a correct system can take, part by part: a message taken just before
    the last fault by a worker that died waits the visibility timeout plus one restore
    scan; the job then may retry ``max_retries`` times, each a backoff of at most
    ``retry_backoff_max``, a promoter pass and a run; a delayed job waits its delay; a
    due job claimed by an API that was then killed waits out the claim's lease; a
    message lost in transit waits for the reaper; and the work still waiting is shared by
    the pool processes.
    """
    parts = {
        "visibility timeout": float(settings.visibility_timeout),
        "restore scan": float(settings.restore_interval),
        "reaper": float(REAPER_INTERVALS * settings.restore_interval),
        "retries": settings.max_retries
        * (settings.retry_backoff_max + PROMOTER_INTERVAL + longest_job),
        "delay": longest_delay + PROMOTER_INTERVAL,
        "promoter lease": PROMOTER_LEASE if api_killed else 0.0,
        "backlog": remaining_work / max(1, slots),
        "slack": SLACK_SECONDS,
    }
    return Bound(parts)


def drain_bound(settings: Settings) -> Bound:
    """How long a SIGTERMed worker may take to exit: its shutdown deadline, the requeue
    watch after it, Celery's pool teardown (about 2 s, README) within the slack."""
    return Bound(
        {
            "shutdown timeout": float(settings.shutdown_timeout),
            "requeue watch": REQUEUE_WATCH_SECONDS,
            "slack": SLACK_SECONDS,
        }
    )


def wall_bound(config: ChaosConfig, settings: Settings, longest_job: float) -> float:
    """An upper bound of one soak's wall time (pytest's timeout, a backstop only): start,
    faults, submissions, drains, the terminal wait with the whole workload as backlog,
    checks."""
    work = config.jobs * (longest_job + 1.0)
    terminal = terminal_bound(
        settings,
        longest_job=longest_job,
        longest_delay=longest_job,
        remaining_work=work,
        slots=config.workers * config.concurrency,
        api_killed=True,
    )
    start_and_checks = 4 * SLACK_SECONDS
    return (
        start_and_checks
        + config.seconds
        + SUBMIT_GRACE_SECONDS
        + drain_bound(settings).seconds
        + terminal.seconds
    )
