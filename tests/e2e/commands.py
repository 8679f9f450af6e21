"""Running docker, kind, kubectl and helm from the e2e suites: one way, with useful failures."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping


class CommandFailed(AssertionError):
    """A tool exited non-zero or ran out of time; the message has its output."""


def _tail(label: str, data: str | bytes | None, lines: int = 60) -> str:
    text = (data.decode(errors="replace") if isinstance(data, bytes) else data or "").rstrip()
    if not text:
        return ""
    kept = text.splitlines()[-lines:]
    return f"\n--- {label} (last {len(kept)} lines) ---\n" + "\n".join(kept)


def run(
    *args: str,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; with ``check``, raise with the command line and its output.

    The command and its duration go to stderr, which pytest shows next to a failure.
    """
    shown = " ".join(args)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(
            f"`{shown}` did not finish within {timeout:.0f} s"
            + _tail("stdout", exc.stdout)
            + _tail("stderr", exc.stderr)
        ) from None
    print(
        f"$ {shown}  [exit {proc.returncode}, {time.monotonic() - started:.1f} s]", file=sys.stderr
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"`{shown}` exited {proc.returncode}"
            + _tail("stdout", proc.stdout)
            + _tail("stderr", proc.stderr)
        )
    return proc
