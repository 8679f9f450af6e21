"""The cluster's host processes: started detached with a log and a pid file, stopped by it.

The processes outlive ``python -m cluster up`` (they are the cluster), so they are not
children to wait for: each runs in a session of its own, its pid is written under
``pids/``, and ``down`` stops it by that pid after checking that the pid still belongs to
the same program (a pid reused by another process is never signalled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cluster import settings


class StartError(Exception):
    """A component did not start or become healthy; the message names its log."""


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_pid(paths: settings.Paths, name: str) -> int | None:
    """The pid of component ``name`` if it is alive and still the program we started."""
    pidfile = paths.pids / f"{name}.pid"
    try:
        pid_text, _, program = pidfile.read_text().partition("\n")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    cmd = _cmdline(pid)
    if not cmd or cmd[0] != program.strip():
        return None
    return pid


def _pid(paths: settings.Paths, name: str) -> int | None:
    try:
        return int((paths.pids / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def log_path(paths: settings.Paths, name: str) -> Path:
    return paths.logs / f"{name}.log"


def start(
    paths: settings.Paths,
    name: str,
    argv: Sequence[str],
    env: dict[str, str] | None = None,
) -> int:
    """Start ``argv`` detached, its output appended to logs/NAME.log; its pid."""
    if (pid := running_pid(paths, name)) is not None:
        return pid
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    log = log_path(paths, name).open("ab")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        log.close()
    (paths.pids / f"{name}.pid").write_text(f"{proc.pid}\n{argv[0]}\n")
    return proc.pid


def wait_healthy(
    paths: settings.Paths,
    name: str,
    check: Callable[[], bool],
    timeout: float,
) -> None:
    """Poll ``check`` until true; fail at once if the process has exited, naming its log."""
    deadline = time.monotonic() + timeout
    pid = _pid(paths, name)
    while True:
        # By pid, not by program: just after the fork the child is not yet the program.
        if pid is None or not _alive(pid):
            raise StartError(f"{name} exited during start-up: {tail(paths, name)}")
        try:
            if check():
                return
        except Exception:  # not answering yet (connection refused, TLS not ready, ...)
            pass
        if time.monotonic() > deadline:
            raise StartError(f"{name} not healthy after {timeout:.0f} s: {tail(paths, name)}")
        time.sleep(0.5)


def tail(paths: settings.Paths, name: str, lines: int = 25) -> str:
    log = log_path(paths, name)
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        text = []
    return f"see {log}\n" + "\n".join(text)


def stop(paths: settings.Paths, name: str, timeout: float = 20.0) -> None:
    """SIGTERM the component, SIGKILL it after ``timeout``; forget its pid file."""
    pid = running_pid(paths, name)
    if pid is not None:
        terminate(pid, timeout)
    (paths.pids / f"{name}.pid").unlink(missing_ok=True)


def terminate(pid: int, timeout: float = 20.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        # A zombie (our own child that exited) counts as gone.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pids_matching(predicate: Callable[[list[str]], bool]) -> list[int]:
    """Pids of the processes whose command line satisfies ``predicate``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and predicate(_cmdline(int(entry.name))):
            found.append(int(entry.name))
    return found
