"""The seeded fault loop: what it may do to the system, and the record of what it did.

Every choice (which fault, which worker, which pool child, how long Redis stays down,
the pause before the next fault) comes from one ``random.Random(seed)``, so a seed names
a sequence of faults; when each lands relative to the jobs still depends on timing.
Each action leaves the system whole again (a replacement worker started, Redis and the
API restarted), as an orchestrator would, so the soak measures recovery, not outage.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.chaos.processes import System, Worker

# Pause between two faults, seconds: long enough that workers reconnect and run jobs in
# between, short enough for a dozen or more faults a minute.
GAP = (2.0, 5.0)
# How long a SIGKILLed Redis stays down before it is started again (seconds).
REDIS_DOWNTIME = (0.2, 2.0)

# Kinds that can interrupt a running job (an API kill cannot: it runs no job).
INTERRUPTING = frozenset(
    {"worker-term", "worker-kill", "child-kill", "redis-kill", "redis-restart"}
)


@dataclass(frozen=True)
class Action:
    """One fault: when it hit (wall time), what, and when the hit part was back."""

    kind: str
    at: float
    target: str
    detail: str
    back_at: float

    @property
    def outage(self) -> float:
        return self.back_at - self.at


class FaultLoop:
    def __init__(self, system: System, kinds: tuple[str, ...], seed: int) -> None:
        self.system = system
        self.kinds = kinds
        self.rng = random.Random(f"{seed}:faults")
        self.actions: list[Action] = []
        self.skipped: list[str] = []
        self._do: dict[str, Callable[[], Action | None]] = {
            "worker-term": self._worker_term,
            "worker-kill": self._worker_kill,
            "child-kill": self._child_kill,
            "redis-kill": self._redis_kill,
            "redis-restart": self._redis_restart,
            "api-kill": self._api_kill,
        }

    def run(self, until: float, done: Callable[[Action], None] = lambda a: None) -> list[Action]:
        """Act until ``until`` (wall time), calling ``done`` after each action; the last
        action may end a little after ``until``."""
        while True:
            pause = self.rng.uniform(*GAP)
            kind = self.rng.choice(self.kinds)
            if time.time() + pause >= until:
                self._idle(until)
                return self.actions
            self._idle(time.time() + pause)
            action = self._do[kind]()
            if action is None:
                self.skipped.append(kind)
            else:
                self.actions.append(action)
                done(action)
            self.system.supervise()

    def _idle(self, until: float) -> None:
        while (left := until - time.time()) > 0:
            self.system.supervise()
            time.sleep(min(0.2, left))

    def _pick(self, candidates: list[Worker]) -> Worker | None:
        # Sorted by name so that the same seed picks the same position in the same set.
        ready = sorted((w for w in candidates if w.ready), key=lambda w: int(w.name[1:]))
        return self.rng.choice(ready) if ready else None

    # -- the faults ---------------------------------------------------------------------
    def _worker_term(self) -> Action | None:
        worker = self._pick(self.system.live)
        if worker is None:
            return None
        at = time.time()
        self.system.term_worker(worker)
        new = self.system.start_worker()
        return Action(
            "worker-term",
            at,
            worker.name,
            f"SIGTERM pid {worker.pid}; replacement {new.name}",
            time.time(),
        )

    def _worker_kill(self) -> Action | None:
        worker = self._pick(self.system.live)
        if worker is None:
            return None
        at = time.time()
        pids = self.system.kill_worker(worker)
        new = self.system.start_worker()
        return Action(
            "worker-kill",
            at,
            worker.name,
            f"SIGKILL pids {pids} (main {worker.pid}); replacement {new.name}",
            time.time(),
        )

    def _child_kill(self) -> Action | None:
        worker = self._pick([w for w in self.system.live if w.process.children()])
        if worker is None:
            return None
        children = sorted(worker.process.children())
        if not children:
            return None
        child = self.rng.choice(children)
        at = time.time()
        try:
            # A pool process of its own group (worker/shutdown.py): only it dies.
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return Action("child-kill", at, worker.name, f"SIGKILL pool child {child}", time.time())

    def _redis_kill(self) -> Action:
        downtime = self.rng.uniform(*REDIS_DOWNTIME)
        at = time.time()
        self.system.redis.kill()
        time.sleep(downtime)
        self.system.start_redis()
        return Action("redis-kill", at, "redis", f"SIGKILL, down {downtime:.1f} s", time.time())

    def _redis_restart(self) -> Action:
        at = time.time()
        self.system.redis.stop()  # SIGTERM: Redis writes its append-only file and exits
        stopped = time.time() - at
        self.system.start_redis()
        return Action(
            "redis-restart", at, "redis", f"SIGTERM (exit took {stopped:.1f} s), start", time.time()
        )

    def _api_kill(self) -> Action:
        assert self.system.api is not None
        victim = self.system.api
        at = time.time()
        self.system.kill_api()
        self.system.start_api(30)
        return Action("api-kill", at, victim.name, f"SIGKILL pid {victim.proc.pid}", time.time())
