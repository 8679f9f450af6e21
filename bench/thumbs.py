"""Benchmark 1: thumbnails of one photo, bgworker's pipeline against naive Pillow and pyvips.

Each variant runs in a fresh child process per round (``python -m bench.thumbs VARIANT
...``), so its peak RSS is its own; rounds interleave the variants (A B C A B C ...).
Throughput is per core: images per CPU-second of the child (pyvips is held to one thread
with VIPS_CONCURRENCY=1; Pillow and libwebp use one thread anyway), which is what a worker
with one pool process per core gets.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Stat, log, proc_status, run_json

QUALITY = 80  # WebP quality of every variant: bgworker's default BGWORKER_THUMBNAIL_QUALITY
NAIVE_METHOD = 4  # Pillow's default WebP method
VARIANTS = ("bgworker", "bgworker-m4", "naive", "naive-m2", "pyvips", "pyvips-e2")
ANCHORS = ("naive", "pyvips")
DESCRIPTIONS = {
    "bgworker": "bgworker `imaging.make_thumbnails` with the default settings "
    "(draft-mode JPEG decode, LANCZOS cascade, WebP q80: method 2 for the largest "
    "thumbnail, 4 for the smaller ones)",
    "bgworker-m4": "the same with `BGWORKER_THUMBNAIL_WEBP_METHOD=4` (the previous default)",
    "naive": "naive Pillow: full decode, LANCZOS from full size for each width, WebP q80 method 4",
    "naive-m2": "naive Pillow with WebP method 2: a control, the same pixels as naive encoded "
    "with bgworker's default method, to show what the encoder setting alone does to PSNR",
    "pyvips": "pyvips: one full decode, `thumbnail_image` per width, `webpsave` Q=80 effort=4 "
    "(its defaults), metadata stripped",
    "pyvips-e2": "pyvips as above with `effort=2` (the same libwebp effort as bgworker's default)",
}

Stages = dict[str, float]


# --- the variants (run inside a child) --------------------------------------------------


def _bgworker(method: int | None) -> Callable[[Path, list[int]], dict[int, bytes]]:
    from worker import imaging
    from worker.settings import Settings

    settings = Settings.from_env({})
    webp_method = settings.thumbnail_webp_method if method is None else method

    def run(src: Path, widths: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        imaging.make_thumbnails(
            src,
            widths,
            max_pixels=settings.max_pixels,
            quality=settings.thumbnail_quality,
            method=webp_method,
            on_thumbnail=out.__setitem__,
        )
        return out

    return run


def _naive(method: int) -> Callable[[Path, list[int]], dict[int, bytes]]:
    return lambda src, widths: _naive_run(src, widths, method)


def _naive_run(src: Path, widths: list[int], method: int) -> dict[int, bytes]:
    from PIL import Image, ImageOps

    out: dict[int, bytes] = {}
    with Image.open(src) as im:
        full = ImageOps.exif_transpose(im).convert("RGB")
    for width in widths:
        size = (width, round(full.height * width / full.width))
        buf = io.BytesIO()
        full.resize(size, Image.Resampling.LANCZOS).save(
            buf, "WEBP", quality=QUALITY, method=method
        )
        out[width] = buf.getvalue()
    return out


def _pyvips(effort: int) -> Callable[[Path, list[int]], dict[int, bytes]]:
    import pyvips  # type: ignore[import-untyped]

    # No operation cache: every run must decode and resize for real, as a worker would
    # for a new upload (the cache would otherwise hand back the same file's decode).
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)

    def run(src: Path, widths: list[int]) -> dict[int, bytes]:
        image = pyvips.Image.new_from_file(str(src)).autorot().copy_memory()  # one decode
        out: dict[int, bytes] = {}
        for width in sorted(widths, reverse=True):
            thumb = image.thumbnail_image(width)
            out[width] = thumb.webpsave_buffer(Q=QUALITY, effort=effort, keep="none")
        return out

    return run


def _variant(name: str) -> Callable[[Path, list[int]], dict[int, bytes]]:
    if name == "bgworker":
        return _bgworker(None)
    if name == "bgworker-m4":
        return _bgworker(4)
    if name == "naive":
        return _naive(NAIVE_METHOD)
    if name == "naive-m2":
        return _naive(2)
    if name == "pyvips":
        return _pyvips(4)
    if name == "pyvips-e2":
        return _pyvips(2)
    raise ValueError(name)


def _stages(name: str, src: Path, widths: list[int], keep: Path) -> Stages:
    """CPU seconds of decode, resize and encode, from the variant's own steps.

    The resized pixels (before encoding) are kept in `keep` as PNG, to tell resampling
    error from codec error.
    """
    from PIL import Image, ImageOps

    targets = sorted(widths, reverse=True)
    t = time.process_time
    if name.startswith("bgworker"):
        from worker import imaging
        from worker.settings import Settings

        settings = Settings.from_env({})
        method = settings.thumbnail_webp_method if name == "bgworker" else 4
        t0 = t()
        with src.open("rb") as fp:
            fmt, im = imaging._open(fp, settings.max_pixels)
            with im:
                full, current = imaging._decode(im, fmt, targets[0])
                current, icc = imaging._to_rgb(current)
                current.load()
        t1 = t()
        images = []
        for width in targets:
            size = imaging._fit(width, full)
            if current.size != size:
                current = current.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            images.append(current)
        t2 = t()
        for img in images:
            imaging._webp(img, icc, quality=settings.thumbnail_quality, method=method)
        t3 = t()
        for width, img in zip(targets, images, strict=True):
            img.save(keep / f"{width}.png")
    elif name.startswith("naive"):
        naive_method = 2 if name == "naive-m2" else NAIVE_METHOD
        t0 = t()
        with Image.open(src) as opened:
            full_img = ImageOps.exif_transpose(opened).convert("RGB")
        t1 = t()
        images = [
            full_img.resize(
                (w, round(full_img.height * w / full_img.width)), Image.Resampling.LANCZOS
            )
            for w in targets
        ]
        t2 = t()
        for img in images:
            img.save(io.BytesIO(), "WEBP", quality=QUALITY, method=naive_method)
        t3 = t()
        for width, img in zip(targets, images, strict=True):
            img.save(keep / f"{width}.png")
    else:
        import pyvips

        pyvips.cache_set_max(0)
        effort = 2 if name == "pyvips-e2" else 4
        t0 = t()
        image = pyvips.Image.new_from_file(str(src)).autorot().copy_memory()
        t1 = t()
        thumbs = [image.thumbnail_image(w).copy_memory() for w in targets]
        t2 = t()
        for thumb in thumbs:
            thumb.webpsave_buffer(Q=QUALITY, effort=effort, keep="none")
        t3 = t()
        for width, thumb in zip(targets, thumbs, strict=True):
            thumb.write_to_file(str(keep / f"{width}.png"))
    return {"decode": t1 - t0, "resize": t2 - t1, "encode": t3 - t2}


def child(name: str, sources: list[Path], widths: list[int], count: int, outdir: Path) -> None:
    """Time `count` runs per source after one warm-up; print JSON."""
    run = _variant(name)
    result: dict[str, Any] = {"variant": name, "sources": {}}
    for src in sources:
        outputs = run(src, widths)  # warm-up (imports, first-use costs)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(count):
            outputs = run(src, widths)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        target = outdir / name / src.stem
        target.mkdir(parents=True, exist_ok=True)
        for width, data in outputs.items():
            (target / f"{width}.webp").write_bytes(data)
        stages = _stages(name, src, widths, target)
        result["sources"][src.name] = {
            "cpu": cpu,
            "wall": wall,
            "count": count,
            "bytes": {str(w): len(d) for w, d in outputs.items()},
            "stages": stages,
        }
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec.
    result["maxrss_kib"] = proc_status(os.getpid())["VmHWM"]
    print(json.dumps(result))


# --- the parent ---------------------------------------------------------------------------


def _reference(src: Path, widths: list[int]) -> dict[int, Any]:
    """Naive Pillow's resized pixels before encoding: what every output is compared with."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(src) as im:
        full = ImageOps.exif_transpose(im).convert("RGB")
    return {
        w: np.asarray(
            full.resize((w, round(full.height * w / full.width)), Image.Resampling.LANCZOS),
            dtype=np.float64,
        )
        for w in widths
    }


def _pixels(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


def _psnr(reference: Any, got: Any) -> float:
    import numpy as np

    # pyvips may round a height the other way: compare the common area.
    h, w = min(got.shape[0], reference.shape[0]), min(got.shape[1], reference.shape[1])
    mse = float(((got[:h, :w] - reference[:h, :w]) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def run(
    sources: dict[str, Path], widths: list[int], rounds: int, count: int, work: Path
) -> dict[str, Any]:
    outdir = work / "thumbs"
    env = {"VIPS_CONCURRENCY": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    raw: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    srcs = [str(p) for p in sources.values()]
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for name in order:
            argv = [sys.executable, "-m", "bench.thumbs", name, str(outdir), str(count)]
            raw[name].append(run_json([*argv, ",".join(map(str, widths)), *srcs], env))
        log(f"thumbnails round {r + 1}/{rounds} done")
    results: dict[str, Any] = {"variants": {}, "widths": widths, "count": count}
    refs = {src.name: _reference(src, widths) for src in sources.values()}
    for name, runs in raw.items():
        per_src: dict[str, Any] = {}
        for src in sources.values():
            rows = [run_["sources"][src.name] for run_ in runs]
            per_src[src.name] = {
                "per_core": Stat.of([x["count"] / x["cpu"] for x in rows]).as_dict(),
                "wall": Stat.of([x["count"] / x["wall"] for x in rows]).as_dict(),
                "ms_per_image": Stat.of([1000 * x["cpu"] / x["count"] for x in rows]).as_dict(),
                "bytes": rows[-1]["bytes"],
                "stages_ms": {
                    k: Stat.of([1000 * x["stages"][k] for x in rows]).as_dict()
                    for k in ("decode", "resize", "encode")
                },
                # The brief's measure: this output against naive Pillow's output (both decoded).
                "psnr": {
                    str(w): _psnr(
                        _pixels(outdir / "naive" / src.stem / f"{w}.webp"),
                        _pixels(outdir / name / src.stem / f"{w}.webp"),
                    )
                    for w in widths
                },
                # Resampling alone: resized pixels before encoding vs naive Pillow's.
                "psnr_resample": {
                    str(w): _psnr(refs[src.name][w], _pixels(outdir / name / src.stem / f"{w}.png"))
                    for w in widths
                },
                # Codec included: this output vs naive Pillow's pixels before encoding.
                "psnr_vs_pixels": {
                    str(w): _psnr(
                        refs[src.name][w], _pixels(outdir / name / src.stem / f"{w}.webp")
                    )
                    for w in widths
                },
            }
        results["variants"][name] = {
            "sources": per_src,
            "maxrss_mib": Stat.of([x["maxrss_kib"] / 1024 for x in runs]).as_dict(),
            "samples_per_core": {
                src.name: [
                    x["sources"][src.name]["count"] / x["sources"][src.name]["cpu"] for x in runs
                ]
                for src in sources.values()
            },
        }
    return results


if __name__ == "__main__":
    name_, outdir_, count_, widths_, *srcs_ = sys.argv[1:]
    os.nice(0)
    child(
        name_,
        [Path(s) for s in srcs_],
        [int(w) for w in widths_.split(",")],
        int(count_),
        Path(outdir_),
    )
