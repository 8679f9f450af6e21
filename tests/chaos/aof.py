"""Redis' append-only file read back as evidence: what happened to one job's message.

The soak's Redis writes second-resolution ``#TS:`` annotations (``aof-timestamp-enabled``,
set by :meth:`tests.chaos.processes.System.start_redis`). Replaying the queue lists
command by command shows which ``RPOP`` took a lost job's message (a worker's BRPOP is
written as an RPOP) and whether the ``HSET unacked`` that should register it ever came.
A Redis restart replays the same file, so one trace spans every restart of the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from worker.jobs import job_key
from worker.queues import QUEUES, UNACKED_HASH

MUTEX = b"unacked_mutex"


@dataclass(frozen=True)
class Command:
    at: int | None  # the last #TS annotation before it (Unix seconds)
    args: list[bytes]

    @property
    def name(self) -> str:
        return self.args[0].decode(errors="replace").upper() if self.args else ""


def _parse(data: bytes, at: int | None) -> tuple[list[Command], int | None]:
    """RESP arrays and ``#`` annotations; a command cut short by a kill ends the list."""
    commands: list[Command] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            eol = data.index(b"\r\n", pos)
            line = data[pos:eol]
            pos = eol + 2
            if line.startswith(b"#TS:"):
                at = int(line[4:])
                continue
            if line.startswith(b"#") or not line:
                continue
            if not line.startswith(b"*"):
                break  # not an AOF command: stop rather than guess
            args = []
            for _ in range(int(line[1:])):
                eol = data.index(b"\r\n", pos)
                size = int(data[pos + 1 : eol])
                pos = eol + 2
                if pos + size > end:
                    raise ValueError("truncated")
                args.append(data[pos : pos + size])
                pos += size + 2
            commands.append(Command(at, args))
    except ValueError:
        pass  # the tail of a file whose writer was killed mid-command
    return commands, at


def read_commands(data_dir: Path) -> tuple[list[Command], str]:
    """Every command of the incremental AOF files in manifest order, and a caveat ("" if
    the trace covers the whole run)."""
    aof_dir = data_dir / "appendonlydir"
    manifest = aof_dir / "appendonly.aof.manifest"
    if not manifest.is_file():
        return [], f"no AOF manifest in {aof_dir}"
    caveat = ""
    commands: list[Command] = []
    at: int | None = None
    for line in manifest.read_text().splitlines():
        words = line.split()
        info = dict(zip(words[::2], words[1::2], strict=False))
        name, kind = info.get("file", ""), info.get("type", "")
        if kind == "b" and info.get("seq") != "1":
            caveat = "the AOF was rewritten during the run: commands before it are not traced"
        if kind != "i" or not (aof_dir / name).is_file():
            continue
        more, at = _parse((aof_dir / name).read_bytes(), at)
        commands += more
    return commands, caveat


def _tag(value: bytes) -> str | None:
    """The delivery tag inside a queue entry or an ``unacked`` value."""
    try:
        data = json.loads(value)
        if isinstance(data, list):  # unacked: [message, exchange, routing key]
            data = data[0]
        return str(data["properties"]["delivery_tag"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def trace(
    commands: list[Command], job_id: str, t0: float, limit: int = 40
) -> tuple[list[str], int | None]:
    """What the AOF says happened to the job's messages, its record's states among them,
    with times relative to ``t0`` (the start of the faults); and the time of the last
    entry about it (Unix seconds)."""
    needle = job_id.encode()
    record = job_key(job_id).encode()
    queues = {q.encode(): list[bytes]() for q in QUEUES}
    tags: set[bytes] = set()
    lines: list[str] = []
    last: int | None = None

    def note(command: Command, text: str) -> None:
        nonlocal last
        last = command.at
        when = f"{command.at - t0:+5.0f}s" if command.at is not None else "    ?"
        lines.append(f"AOF {when} {text}")

    for command in commands:
        name, args = command.name, command.args
        key = args[1] if len(args) > 1 else b""
        if key in queues:
            values = queues[key]
            if name in ("LPUSH", "RPUSH"):
                for value in args[2:]:
                    if name == "LPUSH":
                        values.insert(0, value)
                    else:
                        values.append(value)
                    if needle in value:
                        tag = _tag(value)
                        tags.add((tag or "").encode())
                        note(command, f"{name} {key.decode()}: its message (tag {tag})")
            elif name in ("RPOP", "LPOP"):
                count = int(args[2]) if len(args) > 2 else 1
                for _ in range(min(count, len(values))):
                    value = values.pop() if name == "RPOP" else values.pop(0)
                    if needle in value:
                        note(command, f"{name} {key.decode()}: a worker took its message")
            elif name in ("DEL", "UNLINK"):
                values.clear()
            else:
                note(command, f"{name} {key.decode()} (not modelled: the list replay may be off)")
        elif key == UNACKED_HASH.encode() and name in ("HSET", "HDEL"):
            for field in args[2::2] if name == "HSET" else args[2:]:
                if field in tags:
                    what = "registered: taken" if name == "HSET" else "removed: acked/restored"
                    note(command, f"{name} unacked {field.decode()} ({what})")
        elif key == record and name == "HSET":
            fields = dict(zip(args[2::2], args[3::2], strict=False))
            if b"state" in fields:
                note(command, f"record state -> {fields[b'state'].decode()}")
    if len(lines) > limit:
        lines = (
            lines[: limit // 2] + [f"AOF ... {len(lines) - limit} lines ..."] + lines[-limit // 2 :]
        )
    return lines, last


def mutex_history(commands: list[Command], t0: float, last: int = 3) -> list[str]:
    """The last ``unacked_mutex`` writes: a SET with no DEL after it is a lock left behind
    (a holder killed mid-scan, or a Redis killed before the DEL reached the file)."""
    lines = []
    for command in commands:
        if len(command.args) > 1 and command.args[1] == MUTEX:
            when = f"{command.at - t0:+5.0f}s" if command.at is not None else "?"
            lines.append(f"AOF {when} {' '.join(a.decode(errors='replace') for a in command.args)}")
    return lines[-last:]
