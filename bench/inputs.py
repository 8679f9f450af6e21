"""Photo-like test images made here, deterministically (never downloaded)."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter


def photo(size: tuple[int, int], seed: int = 42) -> Image.Image:
    """Smooth gradients, textured noise, soft and hard-edged shapes, fine sensor grain."""
    w, h = size
    small = (max(1, w // 16), max(1, h // 16))
    grad = Image.linear_gradient("L")
    bands = (
        grad.resize(small),
        grad.transpose(Image.Transpose.ROTATE_90).resize(small),
        Image.effect_noise(small, 64),
    )
    img = Image.merge("RGB", bands).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    rng = random.Random(seed)
    for _ in range(80):
        x, y = rng.randrange(w), rng.randrange(h)
        box = (x, y, x + rng.randrange(w // 20, w // 4), y + rng.randrange(h // 20, h // 4))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
        line = (rng.randrange(w), rng.randrange(h), rng.randrange(w), rng.randrange(h))
        draw.line(line, fill=fill, width=rng.randrange(1, 8))
    # Out-of-focus areas and texture, as in a real photo: blur half, keep the rest sharp.
    blurred = img.filter(ImageFilter.GaussianBlur(3))
    mask = Image.linear_gradient("L").resize(size)
    img = Image.composite(img, blurred, mask)
    texture = Image.effect_noise((w // 8, h // 8), 12).resize(size, Image.Resampling.BICUBIC)
    img = ImageChops.add(img, Image.merge("RGB", (texture,) * 3), offset=-128)
    grain = Image.effect_noise((w // 2, h // 2), 5).resize(size, Image.Resampling.NEAREST)
    return ImageChops.add(img, grain.convert("RGB"), offset=-128)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def jpeg_near(img: Image.Image, target_bytes: int) -> bytes:
    """The JPEG of `img` whose size is closest to `target_bytes` (an upload of known size)."""
    return min((jpeg(img, q) for q in range(50, 96, 5)), key=lambda d: abs(len(d) - target_bytes))


def make_inputs(directory: Path) -> dict[str, Path]:
    """Write the bench's inputs once; returns name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "photo_12mp_jpeg": directory / "photo-4000x3000.jpg",
        "photo_2mp_png": directory / "photo-1600x1200.png",
        "upload_200kb_jpeg": directory / "upload-200kb.jpg",
    }
    if not paths["photo_12mp_jpeg"].exists():
        paths["photo_12mp_jpeg"].write_bytes(jpeg(photo((4000, 3000))))
    if not paths["photo_2mp_png"].exists():
        photo((1600, 1200), seed=7).save(paths["photo_2mp_png"], "PNG")
    if not paths["upload_200kb_jpeg"].exists():
        paths["upload_200kb_jpeg"].write_bytes(jpeg_near(photo((1280, 960), seed=3), 200_000))
    return paths
