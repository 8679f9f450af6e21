"""Where originals and thumbnails live: a directory (a PersistentVolume in Kubernetes).

The API writes originals, workers write thumbnails, the API serves them. Every file
appears by ``os.replace`` of a finished temporary file in the same directory tree, so a
reader sees either nothing or the whole file, never a half-written one, even if the
writer dies mid-write.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        for sub in ("originals", "thumbnails", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def original(self, job_id: str) -> Path:
        return self.root / "originals" / job_id[:2] / job_id

    def thumbnail(self, job_id: str, width: int) -> Path:
        return self.root / "thumbnails" / job_id[:2] / job_id / f"{width}.webp"

    def new_temp(self) -> tuple[int, Path]:
        """An open temporary file on the same filesystem as the final paths (rename is atomic)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        return fd, Path(name)

    def publish(self, temp: Path, final: Path) -> None:
        """Move a finished temporary file into place atomically."""
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)

    def write(self, final: Path, data: bytes) -> None:
        """Write ``data`` to ``final`` atomically (temp file in the same directory + rename)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(name, final)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
