"""The storage janitor: removes files no job refers to any more.

Workers delete a job's original as soon as its outcome is final, and the API deletes the
original of an upload whose job was never made. What remains is for the janitor:

- thumbnails (and the originals of ``dead`` jobs, kept for a replay) whose job record has
  expired after ``BGWORKER_JOB_RETENTION_SECONDS``: files and records expire together;
- originals left by a crash (an API killed between storing an upload and queueing its
  job, a worker killed before deleting), and temporary files of interrupted uploads.

A file is removed only when it is older than the grace period *and* its job record does
not exist: an upload's original is stored before its job is created, so a young file
without a record may be one whose job is being made right now. Each pass looks at a
bounded batch of entries (one pipelined EXISTS per batch) and the next pass resumes where
it stopped, so a tree of millions of files costs the same per pass as a small one.
Several API replicas may run it at once: deleting a file twice is harmless.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from worker.jobs import job_key, valid_id
from worker.storage import Storage

BATCH = 1000


class Janitor:
    def __init__(
        self, storage: Storage, client: redis.Redis, grace_seconds: float, batch: int = BATCH
    ) -> None:
        self.storage = storage
        self.client = client
        self.grace = grace_seconds
        self.batch = batch
        self._walk: Iterator[Path] | None = None

    def run_once(self, now: float | None = None) -> int:
        """Look at up to ``batch`` entries (and at the temporary files); return how many
        were removed."""
        cutoff = (time.time() if now is None else now) - self.grace
        removed = self._sweep_tmp(cutoff)
        old = [path for path in self._next_batch() if _mtime(path) < cutoff]
        if not old:
            return removed
        with self.client.pipeline(transaction=False) as pipe:
            for path in old:
                pipe.exists(job_key(path.name))
            exists = pipe.execute()
        for path, alive in zip(old, exists, strict=True):
            if not alive:
                _remove(path)
                removed += 1
        return removed

    def _next_batch(self) -> list[Path]:
        entries: list[Path] = []
        while len(entries) < self.batch:
            if self._walk is None:
                self._walk = self._entries()
            try:
                entries.append(next(self._walk))
            except StopIteration:
                self._walk = None  # the next pass starts from the top again
                break
        return entries

    def _entries(self) -> Iterator[Path]:
        """``originals/<xx>/<id>`` (files) and ``thumbnails/<xx>/<id>`` (directories), one
        prefix directory listed at a time."""
        for kind in ("originals", "thumbnails"):
            top = self.storage.root / kind
            for prefix in _names(top):
                for name in _names(top / prefix):
                    if valid_id(name):
                        yield top / prefix / name

    def _sweep_tmp(self, cutoff: float) -> int:
        removed = 0
        try:
            with os.scandir(self.storage.tmp) as entries:
                for entry in entries:
                    if removed >= self.batch:
                        break
                    try:
                        if entry.is_file() and entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        except FileNotFoundError:
            pass
        return removed


def _names(directory: Path) -> list[str]:
    try:
        with os.scandir(directory) as entries:
            return sorted(entry.name for entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(path: Path) -> float:
    """When the entry last changed (a thumbnail directory: when a file was put in it)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: nothing to do


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
