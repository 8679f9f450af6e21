"""The soak's figures: printed after every run; with ``CHAOS_WRITE_FIGURES=1`` merged per
mode into docs/performance/chaos.json and rendered into docs/performance.md between the
markers below (the approach of the cluster suite's tests/e2e/kind/figures.py: a marked
section replaced whole, appended at the end the first time).
"""

from __future__ import annotations

import datetime
import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from statistics import median
from typing import Any

from tests.chaos.checks import Verdict
from tests.chaos.config import MODES, ChaosConfig
from tests.chaos.faults import Action
from tests.chaos.processes import Incident
from tests.e2e.kind.figures import DOC, REPO
from tests.e2e.kind.figures import _fmt as fmt_seconds
from worker.settings import Settings

RAW = DOC.parent / "performance" / "chaos.json"
BEGIN = "<!-- chaos-figures:begin (written by the chaos soak, tests/chaos/figures.py) -->"
END = "<!-- chaos-figures:end -->"

# Each run's text, for the pytest session's summary (tests/chaos/conftest.py).
printed: list[str] = []


@dataclass(frozen=True)
class Timings:
    wall: float
    settle: float | None  # system whole again -> every job terminal; None: bound ran out
    bound: float


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return ""
    return out.stdout.strip()


def _commit() -> str:
    """HEAD, marked when the code under test (not the soak) differs from it: others may be
    changing the worker in the same tree."""
    commit = _git("rev-parse", "--short", "HEAD") or "?"
    dirty = _git("status", "--porcelain", "--", "worker", "api")
    return f"{commit}+changes" if dirty else commit


def collect(
    config: ChaosConfig,
    settings: Settings,
    verdict: Verdict,
    actions: list[Action],
    incidents: list[Incident],
    timings: Timings,
) -> dict[str, Any]:
    outages: dict[str, list[float]] = {}
    for action in actions:
        outages.setdefault(action.kind, []).append(action.outage)
    return {
        "mode": config.mode,
        "seed": config.seed,
        "fault_seconds": config.seconds,
        "workers": config.workers,
        "concurrency": config.concurrency,
        "jobs": len(verdict.jobs) + verdict.count("not-accepted"),
        "expected": dict(Counter(r.submission.spec.expected for r in verdict.jobs)),
        "outcomes": dict(Counter((r.record or {}).get("state", "missing") for r in verdict.jobs)),
        "actions": dict(Counter(a.kind for a in actions)),
        "outage_seconds": {
            kind: {"median": round(median(v), 1), "max": round(max(v), 1)}
            for kind, v in outages.items()
        },
        "redeliveries": sum(r.redeliveries for r in verdict.jobs),
        "jobs_redelivered": sum(r.redeliveries > 0 for r in verdict.jobs),
        "redelivery_delay_seconds": verdict.delay_figures(),
        "unexplained_redeliveries": len(verdict.unexplained),
        "dead_by_poison_guard": len(verdict.poisoned),
        "reaped": verdict.reaped,
        "lost": verdict.count("lost"),
        "duplicated": verdict.count("duplicated"),
        "wrongly_dead": verdict.count("wrongly-dead"),
        "wrong_outcome": verdict.count("wrong-outcome"),
        "not_accepted": verdict.count("not-accepted"),
        "incidents": [i.what for i in incidents],
        "settle_seconds": round(timings.settle, 1) if timings.settle is not None else None,
        "bound_seconds": round(timings.bound, 1),
        "wall_seconds": round(timings.wall, 1),
        "passed": verdict.passed,
        "settings": {
            "visibility_timeout": settings.visibility_timeout,
            "restore_interval": settings.restore_interval,
            "shutdown_timeout": settings.shutdown_timeout,
            "max_retries": settings.max_retries,
            "retry_backoff_max": settings.retry_backoff_max,
        },
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _delays(fig: dict[str, Any], kind: str = "all") -> str:
    d = fig["redelivery_delay_seconds"].get(kind)
    return f"{d['median']:.0f} / {d['max']:.0f} s" if d else "—"


def _actions(fig: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(fig["actions"].items())) or "none"


def text(fig: dict[str, Any]) -> str:
    """The figures of one run, for the terminal."""
    settle = fig["settle_seconds"]
    lines = [
        f"chaos soak {fig['mode']} seed {fig['seed']}: "
        + ("PASSED" if fig["passed"] else "FAILED")
        + f" in {fmt_seconds(fig['wall_seconds'])}",
        f"  jobs {fig['jobs']} (expected {fig['expected']}), final {fig['outcomes']}",
        f"  actions over {fig['fault_seconds']:g} s: {_actions(fig)}",
        f"  redeliveries {fig['redeliveries']} of {fig['jobs_redelivered']} jobs; "
        f"fault -> redelivery median/max {_delays(fig)}"
        + "".join(
            f"; {kind} {_delays(fig, kind)}"
            for kind in fig["redelivery_delay_seconds"]
            if kind != "all"
        ),
        f"  messages lost in transit and queued again by the reaper: {fig['reaped']}",
        f"  settled in {fmt_seconds(settle) if settle is not None else 'NOT within the bound'}"
        f" (bound {fmt_seconds(fig['bound_seconds'])})",
        f"  lost {fig['lost']}, duplicated {fig['duplicated']}, wrongly dead {fig['wrongly_dead']}"
        f", other wrong outcome {fig['wrong_outcome']}, not accepted {fig['not_accepted']}",
    ]
    if fig["dead_by_poison_guard"]:
        lines.append(
            f"  dead as designed (killed at each of its last runs): {fig['dead_by_poison_guard']}"
        )
    if fig["unexplained_redeliveries"]:
        lines.append(f"  redeliveries with no fault before them: {fig['unexplained_redeliveries']}")
    lines += [f"  incident: {what}" for what in fig["incidents"]]
    return "\n".join(lines)


def section(runs: dict[str, dict[str, Any]]) -> str:
    """The markdown section for the latest run of every mode."""
    lines = [
        BEGIN,
        "## Under faults (chaos soak)",
        "",
        "_Written by the chaos soak (`tests/chaos`, `CHAOS_WRITE_FIGURES=1`); each row is the "
        "latest run of its mode. Do not edit by hand._",
        "",
        "Real redis-server (append-only file), API and workers on loopback; jobs submitted over "
        "HTTP with idempotency keys, each with its outcome known beforehand; a seeded loop of "
        "faults; then every job is checked from outside (API and Redis). Redelivery delay: from "
        "the fault that interrupted a run to the job's next start (median / max). Reaped: "
        "messages lost between a worker's BRPOP and kombu's `unacked` that the API's reaper "
        "queued again. Settle: from "
        "the system whole again to every job ended. Run one by hand with "
        "`python -m tests.chaos --mode mixed --seconds 600 --seed 7`.",
        "",
        "| mode | seed | faults | jobs | actions | redeliveries (jobs) | redelivery delay | "
        "reaped | settle | wall | lost | duplicated | wrongly dead | other wrong | "
        "processes that exited by themselves | result | run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(MODES)
    for mode, fig in sorted(runs.items(), key=lambda item: order.index(item[0])):
        settle = fig["settle_seconds"]
        lines.append(
            f"| {mode} | {fig['seed']} | {fig['fault_seconds']:g} s | {fig['jobs']} | "
            f"{_actions(fig)} | {fig['redeliveries']} ({fig['jobs_redelivered']}) | "
            f"{_delays(fig)} | {fig.get('reaped', 0)} | "
            f"{fmt_seconds(settle) if settle is not None else 'bound passed'} | "
            f"{fmt_seconds(fig['wall_seconds'])} | {fig['lost']} | {fig['duplicated']} | "
            f"{fig['wrongly_dead']} | {fig['wrong_outcome'] + fig['not_accepted']} | "
            f"{len(fig['incidents'])} | "
            f"{'passed' if fig['passed'] else '**FAILED**'} | {fig['date']}, `{fig['commit']}` |"
        )
    any_fig = next(iter(runs.values()), None)
    if any_fig is not None:
        s = any_fig["settings"]
        lines += [
            "",
            f"Settings: visibility timeout {s['visibility_timeout']} s (hard limit + margin), "
            f"restore scan every {s['restore_interval']} s, shutdown timeout "
            f"{s['shutdown_timeout']} s, {s['max_retries']} retries, backoff at most "
            f"{s['retry_backoff_max']} s; {any_fig['workers']} workers × concurrency "
            f"{any_fig['concurrency']}. Raw figures: `docs/performance/chaos.json`.",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(fig: dict[str, Any]) -> None:
    """Merge this run into chaos.json (replacing its mode's entry) and re-render the section."""
    runs: dict[str, dict[str, Any]] = {}
    if RAW.is_file():
        runs = json.loads(RAW.read_text()).get("modes", {})
    runs[fig["mode"]] = fig
    RAW.write_text(json.dumps({"modes": runs}, indent=2) + "\n")
    doc = DOC.read_text()
    new = section(runs)
    if BEGIN in doc and END in doc:
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        doc = head + new.rstrip("\n") + tail
    else:
        doc = doc.rstrip("\n") + "\n\n" + new
    DOC.write_text(doc)
