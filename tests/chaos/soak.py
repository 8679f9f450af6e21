"""One soak: start the system, submit the plan under the fault loop, make the system whole,
wait (bounded) for every job to end, check, figure. Every process is gone afterwards,
whatever happened.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos import aof, checks, figures, logs, redis_state
from tests.chaos.config import (
    SLACK_SECONDS,
    SUBMIT_GRACE_SECONDS,
    Bound,
    ChaosConfig,
    drain_bound,
    process_env,
    soak_settings,
    terminal_bound,
)
from tests.chaos.faults import FaultLoop
from tests.chaos.processes import Incident, System
from tests.chaos.workload import LONGEST_DELAY, LONGEST_SLEEP, Submitter, plan

# Findings printed in full; past this many, one line each (the logs under root/logs and
# the run's Redis data stay for the rest).
FULL_FINDINGS = 25
START_TIMEOUT = 4 * SLACK_SECONDS


@dataclass
class Result:
    config: ChaosConfig
    figures: dict[str, Any]
    verdict: checks.Verdict
    incidents: list[Incident]
    root: Path

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def report(self) -> str:
        """The figures, then each finding with its evidence."""
        out = [figures.text(self.figures)]
        findings = self.verdict.findings
        for i, finding in enumerate(findings):
            out.append(
                finding.text() if i < FULL_FINDINGS else f"[{finding.category}] {finding.summary}"
            )
        if self.verdict.poisoned:
            out.append("dead by the poison-message guard: " + "; ".join(self.verdict.poisoned))
        if self.verdict.unexplained:
            out.append(
                "redeliveries with no fault before them: " + "; ".join(self.verdict.unexplained)
            )
        for incident in self.incidents:
            out.append(f"[incident] {incident.what}; its last lines:")
            out += [f"    {line}" for line in incident.detail.splitlines()]
        if findings or self.incidents:
            out.append(f"logs and Redis data of this run: {self.root}")
        return "\n".join(out)


def run_kept(config: ChaosConfig, log: Callable[[str], None] = print, keep: bool = False) -> Result:
    """:func:`run` in a directory of its own, removed afterwards unless the run failed,
    had incidents, or ``keep``. Not pytest's ``tmp_path``: pytest sessions of the same
    user (others run tests on this machine too) delete all but the last three base
    directories, which would take the running Redis' data and a failed run's evidence."""
    root = Path(tempfile.mkdtemp(prefix=f"bgworker-chaos-{config.mode}-{config.seed}-"))
    result: Result | None = None
    try:
        result = run(config, root, log)
        return result
    finally:
        if result is None or keep or not result.passed or result.incidents:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _wait_terminal(system: System, job_ids: list[str], bound: Bound) -> float | None:
    """Seconds until every job was terminal, or None once ``bound`` has passed."""
    client = system.redis_client()
    start = time.time()
    try:
        while True:
            if not redis_state.unfinished(client, job_ids):
                return time.time() - start
            if time.time() - start > bound.seconds:
                return None
            system.supervise()  # a process that dies now is replaced, and noted
            time.sleep(0.5)
    finally:
        client.close()


def run(config: ChaosConfig, root: Path, log: Callable[[str], None] = print) -> Result:
    wall = time.monotonic()
    system = System(root, process_env(root / "state"), config.workers, config.concurrency)
    settings = soak_settings(system.env)
    specs = plan(config.seed, config.jobs, config.seconds, settings)
    submitter = Submitter(lambda: f"http://127.0.0.1:{system.api_port}", specs)
    try:
        system.start(START_TIMEOUT)
        log(
            f"chaos {config.mode} seed {config.seed}: {len(specs)} jobs over {config.seconds:g} s "
            f"of faults ({', '.join(config.kinds)}); {config.workers} workers x "
            f"{config.concurrency}, visibility timeout {settings.visibility_timeout} s; in {root}"
        )
        t0 = time.time()
        submitter.start(t0)
        loop = FaultLoop(system, config.kinds, config.seed)
        actions = loop.run(
            until=t0 + config.seconds,
            done=lambda a: log(f"  {a.at - t0:+6.1f}s {a.kind} {a.target}: {a.detail}"),
        )

        # Whole again: SIGTERMed workers gone, a full set of ready workers, API up.
        system.drain(drain_bound(settings).seconds)
        system.supervise()
        system.wait_workers_ready(START_TIMEOUT)
        submitter.finish(time.time() + SUBMIT_GRACE_SECONDS)
        client = system.redis_client()
        try:
            known = {s.spec.key: s.job_id for s in submitter.submissions.values()}
            missing = [k for k, j in known.items() if j is None]
            # A job whose every answer was lost exists all the same: find it by its key.
            known.update(redis_state.read(client, missing).idempotency if missing else {})
            job_ids = [j for j in known.values() if j]
            left = set(redis_state.unfinished(client, job_ids))
        finally:
            client.close()
        work = sum(
            s.spec.work_seconds(settings)
            for s in submitter.submissions.values()
            if known.get(s.spec.key) in left
        )
        bound = terminal_bound(
            settings,
            longest_job=LONGEST_SLEEP,
            longest_delay=LONGEST_DELAY,
            remaining_work=work,
            slots=config.workers * config.concurrency,
            api_killed=any(a.kind == "api-kill" for a in actions),
        )
        log(f"  whole again; {len(left)} jobs unfinished; waiting at most {bound.describe()}")
        settle = _wait_terminal(system, job_ids, bound)

        client = system.redis_client()
        try:
            state = redis_state.read(client, list(known))
        finally:
            client.close()
        commands, caveat = aof.read_commands(system.redis.data_dir)
        lines = logs.job_lines(system.all_workers())
        apis = logs.api_lines(system.apis)
        evidence = checks.Evidence(t0, actions, lines, apis, commands, caveat)
        verdict = checks.check(
            list(submitter.submissions.values()),
            f"http://127.0.0.1:{system.api_port}",
            state,
            evidence,
        )
        timings = figures.Timings(time.monotonic() - wall, settle, bound.seconds)
        fig = figures.collect(config, settings, verdict, actions, system.incidents, timings)
        figures.printed.append(figures.text(fig))
        if config.write_figures:
            figures.write(fig)
        return Result(config, fig, verdict, system.incidents, root)
    finally:
        submitter.close()
        system.close()
