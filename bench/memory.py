"""Benchmark 5's worst case: peak memory of the thumbnail pipeline at the pixel limit.

``BGWORKER_MAX_PIXELS`` (25 MP by default) is the largest image a worker accepts; this
measures 50 MP, the most a worker is commonly given (the limit is raised to it). A JPEG
that large is decoded at reduced scale; a PNG is decoded whole, and an RGBA one is also
premultiplied by Pillow's resize. Each case runs in a fresh child process
(``python -m bench.memory PATH``) that reports its peak RSS (VmHWM) before and after.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from bench.common import Stat, proc_status, run_json

SIZE = (8160, 6120)  # 49.9 MP, just under a 50-MP limit


def make_inputs(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    small = Image.linear_gradient("L").resize((512, 512))
    noise = Image.effect_noise((512, 512), 40)
    rgba = Image.merge("RGBA", (small, small.transpose(Image.Transpose.ROTATE_90), noise, small))
    big = rgba.resize(SIZE, Image.Resampling.BILINEAR)
    paths = {
        "50-MP JPEG": directory / "limit-8160x6120.jpg",
        "50-MP RGB PNG": directory / "limit-8160x6120-rgb.png",
        "50-MP RGBA PNG": directory / "limit-8160x6120-rgba.png",
    }
    rgb = big.convert("RGB")
    rgb.save(paths["50-MP JPEG"], quality=85)
    rgb.save(paths["50-MP RGB PNG"], compress_level=1)
    del rgb
    big.save(paths["50-MP RGBA PNG"], compress_level=1)
    return paths


def child(path: Path) -> None:
    from worker import imaging
    from worker.settings import Settings

    settings = Settings.from_env({})
    before = proc_status_self()
    imaging.make_thumbnails(
        path,
        settings.thumbnail_widths,
        max_pixels=SIZE[0] * SIZE[1],
        quality=settings.thumbnail_quality,
        method=settings.thumbnail_webp_method,
        on_thumbnail=lambda width, data: None,
    )
    print(json.dumps({"baseline_mib": before / 1024, "peak_mib": proc_status_self() / 1024}))


def proc_status_self() -> int:
    import os

    return proc_status(os.getpid())["VmHWM"]


def run(work: Path, rounds: int) -> dict[str, Any]:
    paths = make_inputs(work / "limit")
    out: dict[str, Any] = {}
    for name, path in paths.items():
        rows = [
            run_json([sys.executable, "-m", "bench.memory", str(path)], {}) for _ in range(rounds)
        ]
        out[name] = {
            "peak_mib": Stat.of([r["peak_mib"] for r in rows]).as_dict(),
            "baseline_mib": Stat.of([r["baseline_mib"] for r in rows]).as_dict(),
            "bytes": path.stat().st_size,
        }
        path.unlink()
    return out


if __name__ == "__main__":
    child(Path(sys.argv[1]))
