"""Image checks and WebP thumbnails: the only module that looks at pixels.

Pure functions over files and bytes (no Redis, Celery or settings), so the API can
probe an upload before queueing it and a worker can turn it into thumbnails under
exactly the same rules about what is accepted. Limits come in as arguments; the
caller reads them from settings.
"""

from __future__ import annotations

import functools
import io
import pathlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from PIL import (
    ExifTags,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageFile,
    ImageMath,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from worker.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

ACCEPTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "GIF"})

_UNSUPPORTED = (
    "unsupported image format: the content must be "
    + ", ".join(sorted(ACCEPTED_FORMATS))
    + " (recognised from the bytes themselves, not the file name or Content-Type); "
    "save or export the picture in one of these formats and upload that file"
)

# What a user can do about a file that cannot be read, whatever Pillow said about it,
# and about one with too many pixels. Messages never quote Pillow: its words name
# decoder internals, and sometimes server-side paths.
_RESAVE = (
    "open it in an image viewer or editor, save it again as JPEG, PNG, WebP or GIF, "
    "and upload that file"
)
_SCALE_DOWN = "scale the picture down (or crop it) below that and upload it again"
# Formats as people write them, for messages.
_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "GIF", "WEBP": "WebP"}

# Pillow's header readers, needed only when Pillow's own bomb guard refuses an image
# before our limit can: reading the header again without it lets us report the size.
_HEADER_READERS: dict[str, type[ImageFile.ImageFile]] = {
    "JPEG": JpegImagePlugin.JpegImageFile,
    "PNG": PngImagePlugin.PngImageFile,
    "GIF": GifImagePlugin.GifImageFile,
    "WEBP": WebPImagePlugin.WebPImageFile,
}

# What Pillow raises for bytes it cannot make sense of. Anything else is a bug or an
# environment failure and must not be reported to the client as a bad image.
_CORRUPT = (OSError, SyntaxError, ValueError, IndexError, EOFError, struct.error)

# Orientations that turn the picture by 90 degrees: the stored width is the shown height.
_SWAPS_AXES = frozenset({5, 6, 7, 8})
# Orientations that need any turn or flip at all (1 is upright).
_TURNS = frozenset({2, 3, 4, 5, 6, 7, 8})

_WEBP_MAX_SIDE = 16383

# Largest ICC profile copied into thumbnails. Camera and display profiles (sRGB 3 KB,
# Display P3 and Adobe RGB under 1 KB) are far smaller; anything bigger is mostly text or
# tables nobody needs in a public thumbnail, so its colours are converted to sRGB instead.
ICC_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class ImageInfo:
    """What the API needs to know about an upload before queueing it."""

    format: str
    width: int
    height: int
    # Frames (pictures) in the file, counted only when asked: 1 for a still image.
    frames: int = 1

    @property
    def animated(self) -> bool:
        """An animation (GIF, APNG, WebP); an MPO JPEG's further pictures are views, not frames."""
        return self.frames > 1 and self.format != "JPEG"


def sniff_format(head: bytes) -> str | None:
    """Name the accepted format whose magic bytes start `head`, else None.

    The decision rests on content only, so a renamed SVG, PDF or TIFF can never reach
    a decoder we did not choose. Pass at least the first 16 bytes of the file.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def probe(path: pathlib.Path, max_pixels: int, *, count_frames: bool = False) -> ImageInfo:
    """Check an upload cheaply, from its header only, and describe it.

    Raises UnsupportedMediaType, InvalidImage or ImageTooLarge, the same way
    make_thumbnails would, so a job is queued only when it has a chance to succeed.
    Pixel data is never decoded, so this is safe to run in the HTTP process.
    ``count_frames`` also counts the frames of an animation, which reads through the
    whole file (still without decoding pixels).
    """
    with path.open("rb") as fp:
        fmt, im = _open(fp, max_pixels)
        with im:
            frames = 1
            if count_frames:
                try:
                    frames = getattr(im, "n_frames", 1)
                except _CORRUPT as exc:
                    raise _unreadable(fmt, exc) from exc
            return ImageInfo(fmt, im.width, im.height, frames)


# WebP effort floor for every thumbnail but the largest (see make_thumbnails).
SMALL_THUMBNAIL_METHOD = 4


def make_thumbnails(
    src: pathlib.Path,
    widths: Sequence[int],
    *,
    max_pixels: int,
    quality: int = 80,
    method: int = 4,
    on_thumbnail: Callable[[int, bytes], None],
) -> dict[int, tuple[int, int]]:
    """Decode `src` once and hand over one metadata-free WebP per distinct width.

    An animation (GIF, APNG, WebP) gives still thumbnails of its first frame.

    Calls ``on_thumbnail(width, webp_bytes)`` largest width first and returns
    ``{width: (w, h)}``. Widths are of the image as displayed (EXIF orientation
    applied); heights keep the aspect ratio; nothing is ever upscaled, so a width at
    or above the source's gives the source size. EXIF and XMP are never written
    (they carry GPS positions); a working RGB ICC profile of at most ICC_MAX_BYTES is
    kept so colours stay right, a larger one is applied (sRGB pixels, no profile) and
    a broken one dropped (see _vet_icc).

    Speed comes from decoding a JPEG at reduced scale (libjpeg DCT scaling, just
    large enough for the biggest thumbnail) and from resizing each thumbnail from
    the next larger one rather than from full size.

    Raises UnsupportedMediaType, InvalidImage or ImageTooLarge for bad input.
    Exceptions from `on_thumbnail` pass through untouched: a failed write is not a
    bad image.
    """
    targets = sorted(set(widths), reverse=True)
    if not targets or targets[-1] < 1:
        raise ValueError(f"widths must be positive and not empty, got {list(widths)!r}")
    if not 0 <= quality <= 100 or not 0 <= method <= 6:
        raise ValueError(f"need 0 <= quality <= 100 and 0 <= method <= 6, got {quality}, {method}")

    sizes: dict[int, tuple[int, int]] = {}
    # Everything happens while the file is open: the decoded pixels may be the opened
    # image itself (no copy of an upright image, which for a 50-MP PNG is 200 MB).
    with src.open("rb") as fp:
        fmt, im = _open(fp, max_pixels)
        with im:
            try:
                full, current = _decode(im, fmt, targets[0])
                current, icc = _to_rgb(current)
            except (*_CORRUPT, Image.DecompressionBombError) as exc:
                raise _unreadable(fmt, exc) from exc
            icc, to_srgb = _vet_icc(icc, current.mode)

            for width in targets:
                size = _fit(width, full)
                if current.size != size:
                    # reducing_gap=3.0 lets Pillow box-shrink first when a step is 6x or
                    # more (a big PNG down to the first thumbnail), which Pillow documents
                    # as indistinguishable from plain LANCZOS.
                    current = current.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
                if to_srgb is not None:
                    # Once, on the largest thumbnail rather than the full-size pixels.
                    current = to_srgb.apply(current)
                    to_srgb = None
                # The largest thumbnail is most of the encode time and takes `method`; the
                # smaller ones cost a quarter of it together and show artefacts soonest
                # (more detail per pixel), so they get at least SMALL_THUMBNAIL_METHOD.
                effort = method if width == targets[0] else max(method, SMALL_THUMBNAIL_METHOD)
                on_thumbnail(width, _webp(current, icc, quality=quality, method=effort))
                sizes[width] = size
    return sizes


@functools.lru_cache(maxsize=16)
def placeholder(width: int) -> bytes:
    """A plain light-grey 4:3 WebP, tens of bytes, shown until thumbnails exist.

    Cached because the API serves it on every poll; the cache is bounded because
    widths may come from requests.
    """
    if not 1 <= width <= _WEBP_MAX_SIDE:
        raise ValueError(f"placeholder width must be 1..{_WEBP_MAX_SIDE}, got {width}")
    img = Image.new("RGB", (width, max(1, round(width * 3 / 4))), (224, 224, 224))
    buf = io.BytesIO()
    # Lossless: a flat colour compresses to a few dozen bytes and has no artefacts.
    img.save(buf, "WEBP", lossless=True)
    return buf.getvalue()


def _open(fp: BinaryIO, max_pixels: int) -> tuple[str, ImageFile.ImageFile]:
    """Parse the header with the one decoder the magic bytes name, and check size."""
    fmt = sniff_format(fp.read(16))
    if fmt is None:
        raise UnsupportedMediaType(_UNSUPPORTED)
    try:
        try:
            im = Image.open(fp, formats=[fmt])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            # Pillow's guard (or its warning, where warnings are errors) fires in
            # open() before we see the size; its message lacks the limit clients can
            # act on. Nothing is decoded either way; our check below then refuses.
            fp.seek(0)
            im = _HEADER_READERS[fmt](fp)
    except Image.DecompressionBombError as exc:
        # Only Pillow's WebP reader guards itself as well (from about 179 MP up).
        raise ImageTooLarge(
            f"the image has far more pixels than the limit of {max_pixels:,} "
            f"(BGWORKER_MAX_PIXELS); {_SCALE_DOWN}"
        ) from exc
    except (UnidentifiedImageError, *_CORRUPT) as exc:
        # Never Pillow's text: it names decoder internals and, for an unidentified
        # file, the server-side path. The cause stays chained for the log.
        raise InvalidImage(
            f"the file starts like a {_NAMES[fmt]} but its header is cut short or damaged, so the "
            f"picture cannot be read; {_RESAVE}"
        ) from exc

    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels, more than the limit "
            f"of {max_pixels:,} pixels (BGWORKER_MAX_PIXELS); {_SCALE_DOWN}"
        )
    return fmt, im


def _unreadable(fmt: str, exc: BaseException) -> InvalidImage:
    """What to tell the user about pixel data Pillow could not decode (not Pillow's words)."""
    fmt = _NAMES[fmt]
    if isinstance(exc, EOFError) or "truncated" in str(exc):
        return InvalidImage(
            f"the file is not a complete {fmt}: it ends before the picture does (cut short, "
            "as by an interrupted upload or copy); upload the whole file again"
        )
    return InvalidImage(f"the {fmt} file is corrupt: its picture data cannot be decoded; {_RESAVE}")


def _decode(im: ImageFile.ImageFile, fmt: str, largest: int) -> tuple[tuple[int, int], Image.Image]:
    """Decode the first frame, upright; return its full displayed size and pixels.

    For JPEG the pixels may be smaller than the full size, but never smaller than
    the largest thumbnail needs.
    """
    if fmt == "JPEG":
        swap = im.getexif().get(ExifTags.Base.Orientation, 1) in _SWAPS_AXES
        stored_w, stored_h = im.size
        full = (stored_h, stored_w) if swap else (stored_w, stored_h)
        out_w, out_h = _fit(largest, full)
        # draft() works in stored (un-rotated) coordinates and picks the strongest
        # 1/2, 1/4 or 1/8 reduction that still covers the requested size.
        im.draft("RGB", (out_h, out_w) if swap else (out_w, out_h))
        return full, _upright(im)
    upright = _upright(im)
    return upright.size, upright


def _upright(im: ImageFile.ImageFile) -> Image.Image:
    """The decoded pixels turned as the EXIF orientation says.

    An image that needs no turn is returned itself, loaded, rather than copied as
    ``ImageOps.exif_transpose`` would.
    """
    if im.getexif().get(ExifTags.Base.Orientation, 1) in _TURNS:
        return ImageOps.exif_transpose(im)
    im.load()
    return im


def _to_rgb(img: Image.Image) -> tuple[Image.Image, bytes | None]:
    """Convert to RGB or RGBA (all WebP holds) and return the ICC profile still valid.

    A profile is kept only when it describes RGB: a CMYK or grey profile attached to
    converted RGB pixels would make viewers show wrong colours.
    """
    icc: bytes | None = img.info.get("icc_profile") or None
    if img.mode == "CMYK":
        return _cmyk_to_srgb(img, icc), None
    if img.mode in ("I", "I;16"):
        img = _sixteen_bit_grey(img)
    mode = "RGBA" if img.has_transparency_data else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    return img, icc if icc is not None and icc[16:20] == b"RGB " else None


def _sixteen_bit_grey(img: Image.Image) -> Image.Image:
    """16-bit grey (PNG) as 8-bit "L", or "LA" when a tRNS chunk names a transparent grey.

    Scaled down, since convert() would clip all above 255; the transparent value is a
    16-bit one, so it is matched against the pixels before scaling, not after.
    """
    grey = img.point(lambda v: v / 256).convert("L")
    transparent = img.info.get("transparency")
    if not isinstance(transparent, int):
        return grey
    alpha = ImageMath.lambda_eval(
        lambda a: (a["im"] != transparent) * 255, im=img.convert("I")
    ).convert("L")
    return Image.merge("LA", (grey, alpha))


def _vet_icc(
    icc: bytes | None, mode: str
) -> tuple[bytes | None, ImageCms.ImageCmsTransform | None]:
    """Decide what an RGB(A) image's ICC profile becomes: ``(profile to embed, transform)``.

    A profile littlecms can build a transform to sRGB from, and at most ICC_MAX_BYTES,
    is kept byte for byte. A usable but larger one is not copied (it can carry hundreds
    of kilobytes of anything in its text tags): the transform returned converts the
    pixels to sRGB, which is what an untagged image means to browsers, and nothing is
    embedded. A profile that does not work (fake, truncated, a header with no tags) is
    dropped and the pixels are taken as sRGB as they are: right for the screenshots and
    web images that carry such junk, a little dull for a wide-gamut photo whose real
    profile was damaged.
    """
    if icc is None:
        return None, None
    if len(icc) <= ICC_MAX_BYTES:
        return (icc, None) if _to_srgb_transform(icc, mode) is not None else (None, None)
    return None, _to_srgb_transform.__wrapped__(icc, mode)


@functools.lru_cache(maxsize=16)
def _to_srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A transform from `icc` to sRGB for `mode` pixels, or None if the profile is unusable.

    Cached (small profiles only, see _vet_icc) because one camera or phone sends the
    same profile with every photo and building a transform takes milliseconds.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space != "RGB ":
            return None
        return ImageCms.buildTransform(profile, _srgb(), mode, mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _cmyk_to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """Use the embedded CMYK profile when it works; print files look wrong otherwise."""
    if icc is not None:
        try:
            converted = ImageCms.profileToProfile(
                img, io.BytesIO(icc), ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except ImageCms.PyCMSError:
            pass  # a broken profile should not cost the picture: use the plain formula
        else:
            if converted is not None:
                return converted
    return img.convert("RGB")


def _fit(width: int, full: tuple[int, int]) -> tuple[int, int]:
    """Size of the thumbnail `width` wide, keeping aspect ratio and never upscaling."""
    full_w, full_h = full
    if width >= full_w:
        return full
    return width, max(1, round(full_h * width / full_w))


def _webp(img: Image.Image, icc: bytes | None, *, quality: int, method: int) -> bytes:
    buf = io.BytesIO()
    # Empty exif/xmp spelled out so no Pillow default can ever copy the source's GPS
    # position or camera serial into a public thumbnail.
    img.save(buf, "WEBP", quality=quality, method=method, icc_profile=icc or b"", exif=b"", xmp=b"")
    return buf.getvalue()
