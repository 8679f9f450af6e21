"""worker.imaging against real Pillow, on images built here (never downloaded)."""

from __future__ import annotations

import io
import math
import pathlib
import random
import struct
import time
import warnings
import zlib
from typing import Any

import pytest
from PIL import (
    ExifTags,
    Image,
    ImageChops,
    ImageCms,
    ImageDraw,
    ImageFile,
    ImageOps,
    ImageStat,
    JpegImagePlugin,
    WebPImagePlugin,
)

from tests import factories
from worker.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from worker.imaging import (
    ACCEPTED_FORMATS,
    ICC_MAX_BYTES,
    ImageInfo,
    make_thumbnails,
    placeholder,
    probe,
    sniff_format,
)

MAX_PIXELS = 16_000_000
SRGB_ICC_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
SRGB_ICC = SRGB_ICC_PROFILE.tobytes()


# --- builders ---------------------------------------------------------------------


def photo(size: tuple[int, int]) -> Image.Image:
    """Photo-like RGB: smooth gradients, textured noise, hard-edged shapes, fine grain.

    Built small and scaled up where detail does not matter, so 12 MP takes well under
    a second.
    """
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
    rng = random.Random(42)
    for _ in range(60):
        x, y = rng.randrange(w), rng.randrange(h)
        box = (x, y, x + rng.randrange(w // 20, w // 4), y + rng.randrange(h // 20, h // 4))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
        line = (rng.randrange(w), rng.randrange(h), rng.randrange(w), rng.randrange(h))
        draw.line(line, fill=fill, width=rng.randrange(1, 8))
    grain = Image.effect_noise((w // 2, h // 2), 10).resize(size, Image.Resampling.NEAREST)
    return ImageChops.add(img, grain.convert("RGB"), offset=-128)


def camera_exif(orientation: int) -> Image.Exif:
    """EXIF as a phone writes it: orientation, camera make and a GPS position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "TestCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    return exif


def encode(img: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def write(tmp_path: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims `width` x `height`."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A tiny WebP whose extended (VP8X) header claims `width` x `height`."""
    # An ICC profile makes Pillow write the extended format, whose header has the size.
    data = bytearray(encode(Image.new("RGB", (4, 4)), "WEBP", icc_profile=SRGB_ICC))
    assert data[12:16] == b"VP8X"
    data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(data)


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(rms * rms for rms in ImageStat.Stat(diff).rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


class Collector:
    """An on_thumbnail callback that keeps what it was given, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bytes]] = []

    def __call__(self, width: int, data: bytes) -> None:
        self.calls.append((width, data))

    def image(self, width: int) -> Image.Image:
        (data,) = [d for w, d in self.calls if w == width]
        img = Image.open(io.BytesIO(data))
        assert img.format == "WEBP"
        return img


def thumbnails(src: pathlib.Path, widths: list[int], **kwargs: Any) -> Collector:
    collected = Collector()
    make_thumbnails(src, widths, max_pixels=MAX_PIXELS, on_thumbnail=collected, **kwargs)
    return collected


@pytest.fixture(scope="module")
def phone_jpeg(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """12 MP, stored 4000x3000 landscape, shown 3000x4000 (orientation 6), GPS, ICC."""
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>52,31N</exif:GPSLatitude>'
    data = encode(
        photo((4000, 3000)),
        "JPEG",
        quality=90,
        exif=camera_exif(orientation=6),
        xmp=xmp + b"</x:xmpmeta>",
        icc_profile=SRGB_ICC,
    )
    return write(tmp_path_factory.mktemp("phone"), "IMG_0001.jpg", data)


# --- sniff_format / probe ------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01", "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
        (b"GIF87a\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00", "GIF"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00", "GIF"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", None),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", None),
        (b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", None),
        (b"", None),
    ],
)
def test_sniff_format_reads_magic_bytes_only(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


@pytest.mark.parametrize("fmt", sorted(ACCEPTED_FORMATS))
def test_probe_describes_each_accepted_format_without_decoding(
    fmt: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A misleading name on purpose: only the content decides.
    src = write(tmp_path, "upload.txt", encode(photo((64, 48)), fmt))

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("probe decoded pixel data")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(WebPImagePlugin.WebPImageFile, "load", no_decoding)

    assert probe(src, MAX_PIXELS) == ImageInfo(fmt, 64, 48)


NOT_ACCEPTED = {
    "svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10"/>',
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
    "postscript": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "mvg": b"push graphic-context\nviewbox 0 0 640 480\nimage over 0,0 0,0 'https://x/'\n",
    "bmp": encode(Image.new("RGB", (8, 8)), "BMP"),
    "tiff": encode(Image.new("RGB", (8, 8)), "TIFF"),
    "text": b"hello, this is not an image\n" * 4,
    "random": random.Random(0).randbytes(4096),
    "empty": b"",
}


@pytest.mark.parametrize("kind", sorted(NOT_ACCEPTED))
def test_probe_refuses_other_formats_whatever_the_file_name(
    kind: str, tmp_path: pathlib.Path
) -> None:
    src = write(tmp_path, "holiday.jpg", NOT_ACCEPTED[kind])
    with pytest.raises(UnsupportedMediaType) as caught:
        probe(src, MAX_PIXELS)
    assert all(fmt in caught.value.message for fmt in ACCEPTED_FORMATS)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(200),
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a\x01",
        b"RIFF\x24\x00\x00\x00WEBPVP8 \x00\x00",
    ],
    ids=["png-garbage", "png-magic-only", "jpeg-magic-only", "gif-short", "webp-short"],
)
def test_probe_reports_a_broken_header_as_invalid(data: bytes, tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidImage) as caught:
        probe(write(tmp_path, "x.png", data), MAX_PIXELS)
    assert "header is cut short or damaged" in caught.value.message
    assert "upload that file" in caught.value.message
    assert str(tmp_path) not in caught.value.message


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png_claiming(20000, 20000), "20000x20000"),  # Pillow's own guard fires first
        (png_claiming(5000, 4000), "5000x4000"),  # only our limit is exceeded
    ],
)
def test_probe_refuses_too_many_pixels_from_the_header_alone(
    data: bytes, size: str, tmp_path: pathlib.Path
) -> None:
    assert len(data) < 100
    src = write(tmp_path, "bomb.png", data)
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as caught:
        probe(src, MAX_PIXELS)
    assert time.perf_counter() - started < 0.5
    message = caught.value.message
    assert size in message
    assert "16,000,000" in message
    assert "BGWORKER_MAX_PIXELS" in message
    assert "scale the picture down" in message


def test_probe_treats_pillows_bomb_warning_as_too_large_when_warnings_are_errors(
    tmp_path: pathlib.Path,
) -> None:
    src = write(tmp_path, "bomb.png", png_claiming(10000, 10000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLarge, match="10000x10000"):
            probe(src, MAX_PIXELS)


def test_probe_refuses_a_webp_bomb(tmp_path: pathlib.Path) -> None:
    src = write(tmp_path, "bomb.webp", webp_claiming(16000, 16000))
    with pytest.raises(ImageTooLarge, match="BGWORKER_MAX_PIXELS"):
        probe(src, MAX_PIXELS)


def test_probe_passes_a_truncated_jpeg_because_it_reads_headers_only(
    tmp_path: pathlib.Path,
) -> None:
    data = encode(photo((800, 600)), "JPEG")
    src = write(tmp_path, "cut.jpg", data[: len(data) // 2])
    assert probe(src, MAX_PIXELS) == ImageInfo("JPEG", 800, 600)


# --- make_thumbnails: the phone photo ------------------------------------------------


def test_phone_photo_gives_upright_metadata_free_webps_largest_first(
    phone_jpeg: pathlib.Path,
) -> None:
    collected = Collector()
    sizes = make_thumbnails(
        phone_jpeg, [320, 1280, 640], max_pixels=MAX_PIXELS, on_thumbnail=collected
    )

    assert sizes == {1280: (1280, 1707), 640: (640, 853), 320: (320, 427)}
    assert [width for width, _ in collected.calls] == [1280, 640, 320]
    for width, data in collected.calls:
        assert b"EXIF" not in data and b"Exif" not in data and b"XMP " not in data
        assert b"TestCam" not in data
        img = collected.image(width)
        assert img.size == sizes[width]
        assert len(img.getexif()) == 0
        assert "exif" not in img.info and "xmp" not in img.info
        assert img.info.get("icc_profile") == SRGB_ICC


def test_jpeg_is_decoded_once_at_reduced_scale_then_resized_in_a_cascade(
    phone_jpeg: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    drafts: list[tuple[str | None, tuple[int, int] | None]] = []
    resizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real_open, real_draft, real_resize = (
        Image.open,
        JpegImagePlugin.JpegImageFile.draft,
        Image.Image.resize,
    )

    def spy_open(fp: Any, *args: Any, **kwargs: Any) -> ImageFile.ImageFile:
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    def spy_draft(
        self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None
    ) -> Any:
        drafts.append((mode, size))
        return real_draft(self, mode, size)

    def spy_resize(self: Image.Image, size: tuple[int, int], *args: Any, **kw: Any) -> Any:
        resizes.append((self.size, size))
        return real_resize(self, size, *args, **kw)

    monkeypatch.setattr(Image, "open", spy_open)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy_draft)
    monkeypatch.setattr(Image.Image, "resize", spy_resize)

    thumbnails(phone_jpeg, [1280, 640, 320])

    assert len(opened) == 1
    # Asked in stored (landscape) coordinates, for the largest thumbnail only ...
    assert drafts == [("RGB", (1707, 1280))]
    # ... so libjpeg decoded at 1/2 scale, and each thumbnail came from the previous one.
    assert resizes == [
        ((1500, 2000), (1280, 1707)),
        ((1280, 1707), (640, 853)),
        ((640, 853), (320, 427)),
    ]


def test_cascade_quality_matches_resizing_from_full_size(
    phone_jpeg: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Catch the pixels on their way into the WebP encoder, so lossy compression (the
    # same for any resizing strategy) does not blur the comparison of the resizing.
    encoded: dict[int, Image.Image] = {}
    real_save = Image.Image.save

    def spy_save(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        encoded[self.width] = self.copy()
        real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", spy_save)
    collected = thumbnails(phone_jpeg, [1280, 640, 320])
    monkeypatch.undo()

    with Image.open(phone_jpeg) as full:
        naive = ImageOps.exif_transpose(full).convert("RGB")
    for width, height in [(1280, 1707), (640, 853), (320, 427)]:
        reference = naive.resize((width, height), Image.Resampling.LANCZOS)
        assert psnr(encoded[width], reference) >= 35.0
        # And what is served is as close to the ideal as the naive way would serve.
        naive_served = Image.open(io.BytesIO(encode(reference, "WEBP", quality=80, method=4)))
        assert psnr(collected.image(width), reference) >= psnr(naive_served, reference) - 0.5


def test_the_largest_thumbnail_takes_the_configured_effort_smaller_ones_at_least_4(
    phone_jpeg: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    methods: dict[int, int] = {}
    real_save = Image.Image.save

    def spy_save(self: Image.Image, fp: Any, format: str | None = None, **params: Any) -> None:
        methods[self.width] = params["method"]
        real_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", spy_save)
    make_thumbnails(
        phone_jpeg, [1280, 640, 320], max_pixels=MAX_PIXELS, method=2, on_thumbnail=Collector()
    )
    assert methods == {1280: 2, 640: 4, 320: 4}
    make_thumbnails(
        phone_jpeg, [640, 320], max_pixels=MAX_PIXELS, method=6, on_thumbnail=Collector()
    )
    assert methods == {1280: 2, 640: 6, 320: 6}


# --- make_thumbnails: other inputs ---------------------------------------------------


def test_small_images_are_never_upscaled(tmp_path: pathlib.Path) -> None:
    src = write(tmp_path, "small.png", encode(photo((200, 100)), "PNG"))
    collected = Collector()
    sizes = make_thumbnails(
        src, [1280, 640, 100, 100], max_pixels=MAX_PIXELS, on_thumbnail=collected
    )
    assert sizes == {1280: (200, 100), 640: (200, 100), 100: (100, 50)}
    assert [width for width, _ in collected.calls] == [1280, 640, 100]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_survives(mode: str, tmp_path: pathlib.Path) -> None:
    img = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    img.paste((0, 200, 0, 255), (100, 0, 200, 100))
    if mode == "P":
        data = encode(img.convert("RGB").convert("P"), "PNG", transparency=0)
    else:
        data = encode(img.convert(mode), "PNG")
    thumb = thumbnails(write(tmp_path, "alpha.png", data), [100]).image(100).convert("RGBA")
    assert thumb.mode == "RGBA"
    assert thumb.getpixel((10, 25))[3] == 0  # type: ignore[index]
    assert thumb.getpixel((90, 25))[3] == 255  # type: ignore[index]


# PNG: an APNG. MPO: a JPEG some cameras write, whose second picture is a view, not a frame.
@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "MPO"])
def test_multi_frame_files_give_a_still_of_their_first_frame(
    fmt: str, tmp_path: pathlib.Path
) -> None:
    red, blue = Image.new("RGB", (120, 90), (255, 0, 0)), Image.new("RGB", (120, 90), "blue")
    data = encode(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0)
    src = write(tmp_path, f"anim.{fmt}", data)
    thumb = thumbnails(src, [60]).image(60)
    assert thumb.size == (60, 45)
    assert getattr(thumb, "n_frames", 1) == 1 and not getattr(thumb, "is_animated", False)
    r, g, b = thumb.convert("RGB").getpixel((30, 22))  # type: ignore[misc]
    assert r > 200 and g < 50 and b < 50
    expected_format = "JPEG" if fmt == "MPO" else fmt
    info = probe(src, MAX_PIXELS, count_frames=True)
    assert info == ImageInfo(expected_format, 120, 90, frames=2)
    assert info.animated == (fmt != "MPO")
    assert probe(src, MAX_PIXELS).frames == 1, "counted only when asked"


@pytest.mark.parametrize("icc", [None, SRGB_ICC], ids=["no-profile", "mismatched-profile"])
def test_cmyk_jpeg_becomes_rgb(icc: bytes | None, tmp_path: pathlib.Path) -> None:
    # An RGB profile on CMYK data cannot be used; the picture must still come out.
    cmyk = Image.new("CMYK", (400, 300), (0, 255, 255, 0))  # red ink
    src = write(tmp_path, "print.jpg", encode(cmyk, "JPEG", icc_profile=icc))
    thumb = thumbnails(src, [200]).image(200)
    assert thumb.mode == "RGB" and thumb.size == (200, 150)
    assert "icc_profile" not in thumb.info
    r, g, b = thumb.getpixel((100, 75))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60


def test_sixteen_bit_grey_png_keeps_its_tones(tmp_path: pathlib.Path) -> None:
    src = write(tmp_path, "grey16.png", encode(Image.new("I;16", (64, 48), 32768), "PNG"))
    r, g, b = thumbnails(src, [32]).image(32).getpixel((16, 12))  # type: ignore[misc]
    assert all(abs(v - 128) <= 3 for v in (r, g, b))


def test_sixteen_bit_grey_png_keeps_its_trns_transparency(tmp_path: pathlib.Path) -> None:
    data = factories.grey16_png_with_trns(64, 48)
    with Image.open(io.BytesIO(data)) as original:  # really 16-bit, really with tRNS
        assert original.mode == "I;16" and original.info["transparency"] == 7
    thumb = thumbnails(write(tmp_path, "grey16-trns.png", data), [32]).image(32)
    assert thumb.mode == "RGBA"
    assert thumb.getpixel((4, 12))[3] == 0  # type: ignore[index]
    r, g, b, a = thumb.getpixel((28, 12))  # type: ignore[misc]
    assert a == 255 and all(abs(v - 50000 // 256) <= 3 for v in (r, g, b))


# --- ICC profiles ------------------------------------------------------------------

SECRET = b"<script>alert(document.cookie)</script> Jane Doe, 12 Elm Street"


def red_with_profile(fmt: str, icc: bytes, mode: str = "RGB") -> bytes:
    """Pure red in `icc`'s colour space; half transparent for RGBA."""
    return encode(Image.new(mode, (64, 48), (255, 0, 0, 128)[: len(mode)]), fmt, icc_profile=icc)


@pytest.mark.parametrize("size", [300 * 1024, 2048], ids=["300KB", "2KB"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_fake_icc_profile_is_never_copied_into_thumbnails(
    fmt: str, size: int, tmp_path: pathlib.Path
) -> None:
    fake = factories.fake_icc(size, SECRET)
    src = write(tmp_path, f"fake-icc.{fmt}", red_with_profile(fmt, fake))
    with Image.open(src) as original:  # the file really carries it
        assert original.info["icc_profile"] == fake
    collected = thumbnails(src, [32])
    ((_, data),) = collected.calls
    assert b"<script>" not in data and b"Jane Doe" not in data
    thumb = collected.image(32)
    assert "icc_profile" not in thumb.info
    r, g, b = thumb.getpixel((16, 12))  # type: ignore[misc]
    assert r > 200 and g < 50 and b < 50, "the pixels are taken as sRGB, unchanged"


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA")])
def test_a_valid_but_large_profile_is_applied_then_dropped(
    fmt: str, mode: str, tmp_path: pathlib.Path
) -> None:
    # Valid (littlecms builds transforms from it), 300 KB of it a description tag.
    # Its red primary is sRGB's blue, so a pixel of pure "red" is blue once applied.
    big = factories.srgb_icc(swap_red_blue=True, description=SECRET.decode() * 5000)
    assert len(big) > ICC_MAX_BYTES
    ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(big)), SRGB_ICC_PROFILE, "RGB", "RGB"
    )
    src = write(tmp_path, f"big-icc.{fmt}", red_with_profile(fmt, big, mode))
    collected = thumbnails(src, [32])
    ((_, data),) = collected.calls
    assert b"<script>" not in data and SECRET.decode().encode("utf-16-be") not in data
    thumb = collected.image(32)
    assert "icc_profile" not in thumb.info
    pixel = thumb.getpixel((16, 12))
    r, g, b = pixel[:3]  # type: ignore[index]
    assert r < 50 and g < 50 and b > 200, f"converted to sRGB: {pixel}"
    if mode == "RGBA":
        assert abs(pixel[3] - 128) <= 2, "alpha is carried through the conversion"  # type: ignore[index]


def test_a_valid_small_profile_is_kept_byte_for_byte(tmp_path: pathlib.Path) -> None:
    small = factories.srgb_icc(swap_red_blue=True, description="Wide gamut, v4")
    assert len(small) <= ICC_MAX_BYTES
    collected = thumbnails(write(tmp_path, "small-icc.png", red_with_profile("PNG", small)), [32])
    thumb = collected.image(32)
    assert thumb.info["icc_profile"] == small
    r, g, b = thumb.getpixel((16, 12))  # type: ignore[misc]
    assert r > 200 and g < 50 and b < 50, "pixels untouched: the viewer applies the profile"


# --- messages to the user ----------------------------------------------------------

# Words of Pillow's and the decoders' own messages, which mean nothing to a user.
PILLOW_WORDS = (
    "image file is truncated",
    "bytes not processed",
    "broken data stream",
    "cannot identify",
    "decoder",
    "Pillow",
    "PIL",
    "errno",
    "not processed",
    "Errno",
)


def _damaged(data: bytes) -> bytes:
    """`data` with a run of bytes in its middle scrambled (compressed data, for a PNG)."""
    out = bytearray(data)
    start = out.find(b"IDAT") + 20 if b"IDAT" in out else len(out) // 2
    for i in range(start, start + 200):
        out[i] ^= 0x55
    return bytes(out)


BROKEN = {
    "jpeg-cut-in-half": lambda: (d := encode(photo((800, 600)), "JPEG"))[: len(d) // 2],
    "jpeg-headers-only": lambda: encode(photo((800, 600)), "JPEG")[:700],
    "png-cut": lambda: encode(photo((300, 200)), "PNG")[:3000],
    "png-damaged": lambda: _damaged(encode(photo((300, 200)), "PNG")),
    "png-garbage-header": lambda: b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(200),
    "gif-cut": lambda: encode(photo((300, 200)), "GIF")[:3000],
    "webp-cut": lambda: encode(photo((300, 200)), "WEBP")[:2000],
    "webp-header-only": lambda: b"RIFF\x24\x00\x00\x00WEBPVP8 \x00\x00",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_files_get_a_message_in_users_terms(kind: str, tmp_path: pathlib.Path) -> None:
    src = write(tmp_path, "upload.bin", BROKEN[kind]())
    with pytest.raises(InvalidImage) as caught:
        probe(src, MAX_PIXELS)
        thumbnails(src, [320])
    message = caught.value.message
    assert not [word for word in PILLOW_WORDS if word in message], message
    assert str(tmp_path) not in message
    # What is wrong, then what to do about it.
    assert "upload the whole file again" in message or "upload that file" in message, message
    if "cut" in kind and kind != "webp-cut":
        assert "not a complete" in message, message


def test_truncated_jpeg_is_invalid(tmp_path: pathlib.Path) -> None:
    data = encode(photo((800, 600)), "JPEG")
    src = write(tmp_path, "cut.jpg", data[: len(data) // 2])
    with pytest.raises(InvalidImage) as caught:
        thumbnails(src, [320])
    assert caught.value.message == (
        "the file is not a complete JPEG: it ends before the picture does (cut short, as by "
        "an interrupted upload or copy); upload the whole file again"
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (NOT_ACCEPTED["svg"], UnsupportedMediaType),
        (png_claiming(5000, 4000), ImageTooLarge),
        (b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(200), InvalidImage),
    ],
)
def test_make_thumbnails_applies_the_same_checks_as_probe(
    data: bytes, error: type[Exception], tmp_path: pathlib.Path
) -> None:
    with pytest.raises(error):
        thumbnails(write(tmp_path, "upload.png", data), [320])


def test_a_failing_callback_is_not_blamed_on_the_image(tmp_path: pathlib.Path) -> None:
    src = write(tmp_path, "ok.png", encode(photo((64, 48)), "PNG"))

    def disk_full(width: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as caught:
        make_thumbnails(src, [32], max_pixels=MAX_PIXELS, on_thumbnail=disk_full)
    assert not isinstance(caught.value, InvalidImage)


@pytest.mark.parametrize("widths", [[], [320, 0]])
def test_widths_must_be_positive(widths: list[int], tmp_path: pathlib.Path) -> None:
    src = write(tmp_path, "ok.png", encode(photo((64, 48)), "PNG"))
    with pytest.raises(ValueError, match="widths"):
        thumbnails(src, widths)


# --- placeholder ---------------------------------------------------------------------


def test_placeholder_is_a_tiny_cached_4_3_webp() -> None:
    data = placeholder(640)
    assert len(data) < 1000
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.size) == ("WEBP", (640, 480))
        assert img.convert("RGB").getpixel((320, 240)) == (224, 224, 224)
    assert placeholder(640) is data
    with pytest.raises(ValueError):
        placeholder(0)
