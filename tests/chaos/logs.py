"""The workers' log lines about each job: who received it when, and how each run ended.

Celery logs ``Task <name>[<id>] received`` (main process) for every delivery and
``Task <name>[<id>] succeeded in …`` (pool process) each time a body returns, so the
lines tell which worker held each run of a job and how many bodies ran to completion.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass

from tests.chaos.processes import ApiProcess, Worker

_LINE = re.compile(
    r"^\[(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}): (?P<level>\w+)/(?P<proc>[^\]]+)\] "
    r"(?P<message>.*)$"
)
_TASK = re.compile(r"Task [\w.]+\[(?P<id>[0-9a-f]{32})\] (?P<what>\w+)")
_JOB = re.compile(r"\b(?P<id>[0-9a-f]{32})\b")


@dataclass(frozen=True)
class LogLine:
    at: float
    worker: str
    text: str
    task_event: str  # "received", "succeeded", "ignored", ... or "" for other lines


def job_lines(workers: list[Worker]) -> dict[str, list[LogLine]]:
    """Job id -> every line naming it, across all workers, in time order."""
    by_job: dict[str, list[LogLine]] = defaultdict(list)
    for worker in workers:
        for raw in list(worker.process.lines):
            match = _LINE.match(raw.rstrip("\n"))
            if match is None:
                continue
            ids = set(_JOB.findall(match["message"]))
            if not ids:
                continue
            # Celery's asctime is local time, as time.mktime reads it.
            at = time.mktime(time.strptime(match["date"], "%Y-%m-%d %H:%M:%S"))
            at += int(match["ms"]) / 1000
            task = _TASK.search(match["message"])
            for job_id in ids:
                event = task["what"] if task is not None and task["id"] == job_id else ""
                line = f"{match['level']}/{match['proc']}: {match['message'][:200]}"
                by_job[job_id].append(LogLine(at, worker.name, line, event))
    for lines in by_job.values():
        lines.sort(key=lambda line: line.at)
    return by_job


def api_lines(apis: list[ApiProcess]) -> dict[str, list[str]]:
    """Job id -> the API's own log lines naming it (the reaper's, say; no timestamps)."""
    by_job: dict[str, list[str]] = defaultdict(list)
    for api in apis:
        for raw in list(api.lines):
            for job_id in set(_JOB.findall(raw)):
                by_job[job_id].append(f"{api.name}: {raw.strip()[:200]}")
    return by_job
