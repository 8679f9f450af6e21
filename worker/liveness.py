"""Worker liveness: a heartbeat file the main process touches, and the probe that reads it.

Kubernetes needs to tell a stuck worker (its main loop blocked, its consumer wedged) from
a busy one. A busy worker is fine: jobs run in pool processes while the main process's
event loop keeps spinning. So the main process touches a file from a timer on that event
loop; when the loop stops, the file ages, and ``bgworker alive`` (the exec liveness probe)
fails. The probe is a file read, not a broker round trip: a Redis outage must not restart
every worker at once.

During a warm shutdown Celery stops the event loop while it waits for the job in hand,
which would age the file exactly when the kubelet must not interfere. So the shutdown
handler marks the file as draining, and the probe passes until the grace period (which
the kubelet enforces with SIGKILL anyway) runs out.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)

BEAT_INTERVAL = 5.0
DRAINING = "draining"


def beat(path: Path) -> None:
    """Record that the main loop is alive now."""
    try:
        os.utime(path)
    except FileNotFoundError:
        _write(path, "alive")


def mark_draining(path: Path) -> None:
    """Record that a warm shutdown started: the probe passes from now on."""
    _write(path, DRAINING)


def problem(path: Path, max_age: float, now: float | None = None) -> str | None:
    """Why the worker owning ``path`` is not alive, or ``None`` when it is."""
    try:
        stat = path.stat()
        content = path.read_text()
    except FileNotFoundError:
        return f"no heartbeat file at {path}: the worker has not started consuming yet"
    if content.startswith(DRAINING):
        return None
    age = (time.time() if now is None else now) - stat.st_mtime
    if age > max_age:
        return (
            f"heartbeat {path} is {age:.0f} s old (limit {max_age:.0f} s): "
            "the worker's main loop is stuck"
        )
    return None


def heartbeat_step(path: Path, interval: float = BEAT_INTERVAL) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep that beats on the worker's own event-loop timer."""

    class Heartbeat(bootsteps.StartStopStep):
        # After the task consumer: a fresh beat means "consuming", not just "imported".
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, c: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, "alive")
            self.tref = c.timer.call_repeatedly(interval, beat, (path,))

        def stop(self, c: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None

    return Heartbeat


def _write(path: Path, content: str) -> None:
    # Replace atomically: the probe must never read a half-written file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    os.replace(tmp, path)
