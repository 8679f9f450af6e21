"""Small helpers shared by the benchmarks: statistics, processes, memory, Redis."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@dataclass(frozen=True)
class Stat:
    """Median and range of repeated measurements."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 1, unit: str = "") -> str:
        return f"{self.median:,.{digits}f}{unit} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, KiB."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


def children(pid: int) -> list[int]:
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in raw.split()]


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


class Process:
    """A subprocess in its own session, its output collected; killed as a group."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        ready_marker: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.marker = ready_marker
        self.log_path = log_path
        self.proc = subprocess.Popen(
            list(argv),
            env={**os.environ, **env},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.lines) < 2000:
                self.lines.append(line)
            if self.marker is not None and self.marker in line:
                self.ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> Process:
        if not self.ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.proc.args!r} not ready:\n{''.join(self.lines[-40:])}")
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._reader.join(5)
        if self.log_path is not None:
            self.log_path.write_text("".join(self.lines))


def run_json(argv: Sequence[str], env: Mapping[str, str], timeout: float = 300) -> Any:
    """Run a bench child that prints one JSON document on its last stdout line."""
    import json

    done = subprocess.run(
        list(argv),
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
