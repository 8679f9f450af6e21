"""The verdict, from outside: every submitted job ended, once, with its true outcome.

Read through the API (``GET /v1/jobs/{id}``) and straight from Redis (where messages
are, records per idempotency key, event streams), with the workers' logs and Redis'
append-only file as evidence. Findings, one per job and problem:

- ``lost``: accepted, but not terminal once the bound has passed (or its record gone);
- ``duplicated``: one key, several jobs; more than one terminal entry in its event
  stream; or a body without a retry window that ran to completion twice (logs);
- ``wrongly-dead``: expected to succeed, dead-lettered;
- ``wrong-outcome``: any other final state than the expected one;
- ``not-accepted``: the API never accepted it (refused, or down past the grace).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import httpx

from tests.chaos import aof
from tests.chaos.faults import INTERRUPTING, Action
from tests.chaos.logs import LogLine
from tests.chaos.redis_state import Event, RedisState
from tests.chaos.workload import Submission
from worker.jobs import TERMINAL
from worker.tasks.base import MAX_DELIVERIES

CATEGORIES = ("lost", "duplicated", "wrongly-dead", "wrong-outcome", "not-accepted")
REDIS_FAULTS = frozenset({"redis-kill", "redis-restart"})
# Faults that kill the process running a job: what the poison-message guard counts.
DEATHS = frozenset({"worker-kill", "child-kill"})
# A Celery log line is written a moment before the record's start event.
LOG_SKEW = 0.2
# How much longer than its body a run may take (start-up, progress writes, a loaded
# machine): a fault later than that cannot have cut the run short.
RUN_MARGIN = 2.0


@dataclass
class Run:
    """One start of a job's body, from its event stream."""

    at: float
    attempts: int
    cause: str  # "first", "retry" (after a backoff) or "redelivery" (anything else)
    worker: str | None  # the worker that logged "received" for it
    ended_by: Action | None = None  # the fault after which the next run was a redelivery


@dataclass
class Finding:
    category: str
    key: str
    job_id: str | None
    summary: str
    evidence: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(
            [f"[{self.category}] {self.summary}", *(f"    {e}" for e in self.evidence)]
        )


@dataclass
class JobReport:
    submission: Submission
    job_id: str | None
    record: dict[str, Any] | None  # the API's view
    events: list[Event]
    runs: list[Run]
    completions: int
    # (fault kind, seconds from it to the redelivery) per redelivery; and how many had none
    attributed: list[tuple[str, float]] = field(default_factory=list)
    unexplained: int = 0

    @property
    def redeliveries(self) -> int:
        return sum(run.cause == "redelivery" for run in self.runs)


@dataclass
class Verdict:
    jobs: list[JobReport]
    findings: list[Finding]
    delays: dict[str, list[float]]  # fault kind -> seconds from the fault to the redelivery
    unexplained: list[str]  # redeliveries with no fault to explain them
    poisoned: list[str]  # dead as designed: the soak killed its process at every run
    reaped: int  # messages lost in transit that the API's reaper queued again

    def count(self, category: str) -> int:
        return sum(f.category == category for f in self.findings)

    @property
    def passed(self) -> bool:
        return not self.findings

    def delay_figures(self) -> dict[str, dict[str, float]]:
        every = [d for ds in self.delays.values() for d in ds]
        groups = {"all": every, **self.delays}
        return {
            kind: {"n": len(ds), "median": round(median(ds), 1), "max": round(max(ds), 1)}
            for kind, ds in groups.items()
            if ds
        }


def _runs(events: list[Event], lines: list[LogLine]) -> list[Run]:
    runs: list[Run] = []
    attempts, previous = 0, "queued"
    received = [line for line in lines if line.task_event == "received"]
    for event in events:
        if event.attempts > attempts:
            if not runs and event.attempts == 1:
                cause = "first"
            elif previous == "retrying":
                cause = "retry"
            else:
                cause = "redelivery"
            by = [line.worker for line in received if line.at <= event.at + LOG_SKEW]
            runs.append(Run(event.at, event.attempts, cause, by[-1] if by else None))
        attempts = max(attempts, event.attempts)
        previous = event.state
    return runs


def _attribute(
    runs: list[Run], actions: list[Action], duration: float
) -> tuple[list[tuple[str, float]], int]:
    """For each redelivery, the fault that ended the run before it, among the faults that
    landed while that run could still be going (its start to its body's ``duration`` and
    a margin later) and could reach it: first any that hit every job in hand (a Redis
    fault, a SIGTERM or SIGKILL of the worker that held it), else the first pool-child
    kill in that worker, which may have hit its other child. Returns (kind, delay) pairs
    and the count of redeliveries no fault explains."""
    found: list[tuple[str, float]] = []
    unexplained = 0
    for before, run in zip(runs, runs[1:], strict=False):
        if run.cause != "redelivery":
            continue
        end = min(run.at, before.at + duration + RUN_MARGIN)
        reached = [
            a
            for a in actions
            if before.at - LOG_SKEW <= a.at < end
            and a.kind in INTERRUPTING
            and (a.kind in REDIS_FAULTS or before.worker in (None, a.target))
        ]
        certain = [a for a in reached if a.kind != "child-kill"]
        if not reached:
            unexplained += 1
            continue
        cause = (certain or reached)[0]
        before.ended_by = cause
        found.append((cause.kind, run.at - cause.at))
    return found, unexplained


def _killed_every_time(report: JobReport) -> bool:
    """Whether the soak itself killed the process of each of the job's last
    ``MAX_DELIVERIES`` runs before it was declared dead: then the poison-message guard
    did its job (README: "declared dead when its message comes back after the fourth
    death"). Redis outages do not count: a job cancelled on a lost connection did not
    kill its worker."""
    ended = [run.ended_by for run in report.runs[:-1]][-MAX_DELIVERIES:]
    return len(ended) == MAX_DELIVERIES and all(
        action is not None and action.kind in DEATHS for action in ended
    )


def _timeline(report: JobReport, t0: float) -> str:
    parts = []
    previous = None
    runs = {run.attempts: run for run in report.runs}
    attempts = 0
    for event in report.events:
        start = event.attempts > attempts
        attempts = max(attempts, event.attempts)
        if event.state == previous and not start:
            continue  # progress
        previous = event.state
        text = f"{event.at - t0:+.1f}s {event.state}"
        run = runs.get(event.attempts) if start else None
        if run is not None:
            text += f"#{run.attempts} ({run.cause}, {run.worker or 'worker ?'})"
        if event.error and event.state not in ("running", "queued"):
            text += f" [{event.error}]"
        parts.append(text)
    return ", ".join(parts) or "no events"


def _faults_hitting(report: JobReport, t0: float) -> list[str]:
    return [
        f"run #{run.attempts} on {run.worker or '?'} ended by {run.ended_by.kind} of "
        f"{run.ended_by.target} at {run.ended_by.at - t0:+.1f}s ({run.ended_by.detail})"
        for run in report.runs
        if run.ended_by is not None
    ]


def _describe(report: JobReport, redis_record: dict[str, str] | None) -> str:
    spec = report.submission.spec
    record = report.record or {}
    extra = ""
    if redis_record:
        extra = (
            f", deliveries {redis_record.get('deliveries', '?')}, "
            f"retries {redis_record.get('retries') or 0}"
        )
    return (
        f"job {report.job_id} ({spec.key}: {spec.label} {spec.task} {spec.args} on "
        f"{spec.priority}{f', delay {spec.delay:g} s' if spec.delay else ''}) expected "
        f"{spec.expected}, is {record.get('state', 'missing')}; attempts "
        f"{record.get('attempts', '?')}{extra}; error {record.get('error')}"
    )


@dataclass
class Evidence:
    """What the checks may cite besides the records."""

    t0: float
    actions: list[Action]
    lines: dict[str, list[LogLine]]
    api_lines: dict[str, list[str]]
    aof_commands: list[aof.Command]
    aof_caveat: str


def check(
    submissions: list[Submission], api_url: str, state: RedisState, evidence: Evidence
) -> Verdict:
    findings: list[Finding] = []
    reports: list[JobReport] = []
    delays: dict[str, list[float]] = defaultdict(list)
    unexplained: list[str] = []
    poisoned: list[str] = []
    by_key = state.jobs_by_key()
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        for sub in submissions:
            report, found = _check_job(sub, client, state, by_key, evidence, poisoned)
            findings += found
            if report is None:
                continue
            reports.append(report)
            for kind, delay in report.attributed:
                delays[kind].append(delay)
            if report.unexplained:
                unexplained.append(
                    f"{report.job_id} ({sub.spec.label}): {report.unexplained} redelivery(ies)"
                )
    return Verdict(reports, findings, dict(delays), unexplained, poisoned, state.reaped)


def _check_job(
    sub: Submission,
    client: httpx.Client,
    state: RedisState,
    by_key: dict[str, list[str]],
    evidence: Evidence,
    poisoned: list[str],
) -> tuple[JobReport | None, list[Finding]]:
    spec = sub.spec
    t0 = evidence.t0
    job_id = sub.job_id or state.idempotency.get(spec.key)
    findings: list[Finding] = []

    def find(category: str, summary: str, *more: str) -> None:
        findings.append(Finding(category, spec.key, job_id, summary, list(more)))

    if sub.refused:
        find("not-accepted", f"{spec.key}: the API refused it: {sub.refused}")
        return None, findings
    if job_id is None:
        find("not-accepted", f"{spec.key}: never accepted after {sub.tries} tries", *sub.errors)
        return None, findings
    if sub.job_id is None:
        sub.ids.append(job_id)  # created, but every answer was lost: Redis knows it
    if len(set(sub.ids)) > 1:
        find("duplicated", f"{spec.key}: the API answered several jobs {sorted(set(sub.ids))}")
    holders = by_key.get(spec.key, [])
    if len(holders) > 1:
        find("duplicated", f"{spec.key}: {len(holders)} job records carry it: {holders}")
    resp = client.get(f"/v1/jobs/{job_id}")
    record = resp.json() if resp.status_code == 200 else None
    lines = evidence.lines.get(job_id, [])
    events = state.events.get(job_id, [])
    report = JobReport(
        sub,
        job_id,
        record,
        events,
        _runs(events, lines),
        sum(line.task_event == "succeeded" for line in lines),
    )
    # Before the evidence is written, so that it can name the fault that ended each run.
    duration = float(spec.args.get("seconds", 0.0))
    report.attributed, report.unexplained = _attribute(report.runs, evidence.actions, duration)
    detail = [
        "timeline: " + _timeline(report, t0),
        *_faults_hitting(report, t0),
        *(f"log {line.at - t0:+.1f}s {line.worker} {line.text}" for line in lines[-8:]),
        *(f"log {line}" for line in evidence.api_lines.get(job_id, [])[-3:]),
    ]
    about = _describe(report, state.records.get(job_id))
    if record is None:
        find("lost", f"LOST {about}: GET answered {resp.status_code}", *detail)
        return report, findings
    actual = record["state"]
    if actual not in TERMINAL:
        more = [*detail, f"message: {state.whereabouts(job_id)}"]
        trace, last = aof.trace(evidence.aof_commands, job_id, t0)
        more += trace
        if last is not None:
            # The AOF's clock has whole seconds: the faults of that second and the next two.
            more += [
                f"fault after its last AOF entry: {a.kind} {a.target} at {a.at - t0:+.1f}s "
                f"({a.detail})"
                for a in evidence.actions
                if last <= a.at < last + 3
            ]
        if evidence.aof_caveat:
            more.append(f"AOF caveat: {evidence.aof_caveat}")
        if job_id in state.in_unacked:
            more += aof.mutex_history(evidence.aof_commands, t0)
        find("lost", f"LOST {about}", *more)
        return report, findings
    terminal = [e for e in events if e.state in TERMINAL]
    if len(terminal) > 1:
        states = ", ".join(f"{e.state} at {e.at - t0:+.1f}s" for e in terminal)
        find("duplicated", f"{about}: {len(terminal)} terminal events ({states})", *detail)
    # flaky's documented overlap (a worker dying between scheduling a retry and its ack;
    # README, "What exactly once means") lets a second body return, unrecorded.
    if report.completions > 1 and spec.task != "debug.flaky":
        find(
            "duplicated", f"{about}: its body ran to completion {report.completions} times", *detail
        )
    if actual == spec.expected:
        return report, findings
    if actual == "dead" and spec.expected == "succeeded":
        if _killed_every_time(report):
            poisoned.append(f"{job_id} ({spec.label}): " + "; ".join(_faults_hitting(report, t0)))
        else:
            find("wrongly-dead", f"BURIED {about}", *detail)
    else:
        find("wrong-outcome", about, *detail)
    return report, findings
