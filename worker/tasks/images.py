"""Thumbnails of an uploaded photo."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from worker import imaging
from worker.catalog import THUMBNAILS
from worker.errors import PermanentError
from worker.tasks.base import JobTask


class ImageJob(JobTask):
    """An image job: its uploaded original goes once the job's outcome is final."""

    def release_inputs(self, job_id: str) -> None:
        self.bg.storage.original(job_id).unlink(missing_ok=True)


@shared_task(bind=True, base=ImageJob, name=THUMBNAILS)
def thumbnails(self: JobTask, widths: list[int]) -> dict[str, Any]:
    """Make one WebP per width from the job's original; rerunning overwrites the same files."""
    job_id = self.job_id
    settings = self.bg.settings
    storage = self.bg.storage
    source = storage.original(job_id)
    if not source.exists():
        raise PermanentError(f"the uploaded original of job {job_id} is missing from storage")
    done: dict[str, Any] = {}

    def save(width: int, data: bytes) -> None:
        storage.write(storage.thumbnail(job_id, width), data)
        done[str(width)] = {"bytes": len(data)}
        self.progress(100 * len(done) / (len(widths) + 1))

    # Header only (and the frame count): refuses what make_thumbnails would, cheaply.
    info = imaging.probe(source, settings.max_pixels, count_frames=True)
    sizes = imaging.make_thumbnails(
        source,
        widths,
        max_pixels=settings.max_pixels,
        quality=settings.thumbnail_quality,
        method=settings.thumbnail_webp_method,
        on_thumbnail=save,
    )
    for width, (w, h) in sizes.items():
        done[str(width)].update(width=w, height=h)
    # An animation's thumbnails are stills of its first frame: say so to the client.
    return {"thumbnails": done, "animated": info.animated, "frames": info.frames}
