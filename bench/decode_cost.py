"""What a small upload can cost a worker: time and memory of thumbnails by pixel count.

A PNG of one flat colour compresses to almost nothing (a 49-MP one is about 140 KB,
far below any upload limit) but is decoded whole, so the pixel limit
(``BGWORKER_MAX_PIXELS``) is what bounds its cost. A JPEG is decoded at reduced scale
and costs much less at the same size. Each case runs ``make_thumbnails`` (default
widths, quality and effort) in a fresh child process, which reports wall time, CPU time
(``getrusage``) and its peak RSS (VmHWM) above the baseline of an idle process that has
imported the pipeline.

Run by hand (not part of ``make bench``)::

    .venv/bin/python -m bench.decode_cost [--rounds 3] [--sizes 12,24,49]

It prints a Markdown table; README's settings table quotes it.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from bench.common import Stat, proc_status, run_json

KINDS = ("flat RGB PNG", "flat RGBA PNG", "JPEG")


def size_for(megapixels: float) -> tuple[int, int]:
    """A 4:3 size of about `megapixels` (12 → 4000x3000)."""
    height = round(math.sqrt(megapixels * 1e6 * 3 / 4))
    return round(height * 4 / 3), height


def make_input(directory: Path, kind: str, megapixels: float) -> Path:
    size = size_for(megapixels)
    if kind == "JPEG":
        small = Image.merge(
            "RGB",
            (
                Image.linear_gradient("L").resize((512, 384)),
                Image.effect_noise((512, 384), 40),
                Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((512, 384)),
            ),
        )
        path = directory / f"{megapixels:g}mp.jpg"
        small.resize(size, Image.Resampling.BILINEAR).save(path, quality=85)
        return path
    mode = "RGBA" if "RGBA" in kind else "RGB"
    img = Image.new(mode, size, (40, 120, 200, 255)[: len(mode)])
    ImageDraw.Draw(img).rectangle((10, 10, 200, 120), fill=(250, 250, 250, 255)[: len(mode)])
    path = directory / f"{megapixels:g}mp-{mode.lower()}.png"
    img.save(path, compress_level=9)
    return path


def child(path: Path) -> None:
    from worker import imaging
    from worker.settings import Settings

    settings = Settings.from_env({})
    baseline = proc_status_self()
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    imaging.make_thumbnails(
        path,
        settings.thumbnail_widths,
        max_pixels=10**9,  # measure above any limit too
        quality=settings.thumbnail_quality,
        method=settings.thumbnail_webp_method,
        on_thumbnail=lambda width, data: None,
    )
    wall, usage = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime)
    peak = proc_status_self()
    print(
        json.dumps(
            {"wall_s": wall, "cpu_s": cpu, "baseline_mib": baseline / 1024, "peak_mib": peak / 1024}
        )
    )


def proc_status_self() -> int:
    import os

    return proc_status(os.getpid())["VmHWM"]


def run(sizes: list[float], rounds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="decode-cost-") as tmp:
        for megapixels in sizes:
            for kind in KINDS:
                path = make_input(Path(tmp), kind, megapixels)
                runs = [
                    run_json([sys.executable, "-m", "bench.decode_cost", "--child", str(path)], {})
                    for _ in range(rounds)
                ]
                w, h = size_for(megapixels)
                rows.append(
                    {
                        "input": f"{w * h / 1e6:.1f} MP {kind}",
                        "file_kib": path.stat().st_size / 1024,
                        "wall_s": Stat.of([r["wall_s"] for r in runs]),
                        "cpu_s": Stat.of([r["cpu_s"] for r in runs]),
                        "above_mib": Stat.of([r["peak_mib"] - r["baseline_mib"] for r in runs]),
                    }
                )
                path.unlink()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| input | file | wall time | CPU time | peak RSS above an idle process |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['input']} | {row['file_kib']:,.0f} KiB | {row['wall_s'].fmt(2, ' s')} "
            f"| {row['cpu_s'].fmt(2, ' s')} | {row['above_mib'].fmt(0, ' MiB')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="12,24,49", help="megapixels, comma-separated")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return
    sizes = [float(s) for s in args.sizes.split(",")]
    print(table(run(sizes, args.rounds)))


if __name__ == "__main__":
    main()
