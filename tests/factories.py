"""Images built in the tests themselves (never downloaded)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw


def photo_jpeg(
    width: int = 1600, height: int = 1200, *, orientation: int = 1, gps: bool = True
) -> bytes:
    """A photo-like JPEG carrying EXIF orientation and, by default, a GPS position."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse((width // 4, height // 4, width // 2, height // 2), fill=(200, 40, 40))
    draw.rectangle((width // 2, height // 2, width - 10, height - 10), fill=(30, 90, 200))
    exif = Image.Exif()
    exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def png(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "teal").save(out, "PNG")
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's shape)."""
    data = bytearray(png(1, 1))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
MVG = b"push graphic-context\nviewbox 0 0 640 480\nimage over 0,0 0,0 'https://example.invalid/x'\n"


# --- ICC profiles, transparency and animation (issue 13) ------------------------------


def srgb_icc(*, swap_red_blue: bool = False, description: str | None = None) -> bytes:
    """A real, valid RGB ICC profile, built from littlecms' sRGB.

    ``swap_red_blue`` exchanges the red and blue primaries (a colour space whose red
    channel shows blue: converting it to sRGB visibly moves colours).
    ``description`` replaces the profile's description tag (``desc``, a v4 ``mluc``)
    with that text: a valid profile of any size, carrying whatever it is given.
    """
    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", data[128:132])[0]
    entries = {bytes(data[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    if swap_red_blue:
        red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
        data[red + 4 : red + 12], data[blue + 4 : blue + 12] = (
            data[blue + 4 : blue + 12],
            data[red + 4 : red + 12],
        )
    if description is not None:
        text = description.encode("utf-16-be")
        # mluc: type, reserved, one record of 12 bytes (language, country, length, offset).
        tag = b"mluc" + bytes(4) + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(text), 28)
        tag += text
        data += bytes(-len(data) % 4)  # tags start on 4-byte boundaries
        offset = len(data)
        data += tag
        entry = entries[b"desc"]
        data[entry + 4 : entry + 12] = struct.pack(">II", offset, len(tag))
        data[0:4] = struct.pack(">I", len(data))
        data[84:100] = bytes(16)  # profile ID (an MD5) is optional: zero means not computed
    return bytes(data)


def fake_icc(size: int, text: bytes) -> bytes:
    """Not a profile: a 128-byte header that claims RGB (as real ones do), then `text`.

    What an attacker or a careless tool embeds: it passes a look at the header's colour
    space but has no tags, so no colour management system can use it.
    """
    header = bytearray(128)
    header[0:4] = struct.pack(">I", size)
    header[12:16], header[16:20], header[20:24], header[36:40] = b"mntr", b"RGB ", b"XYZ ", b"acsp"
    body = (text * (size // max(1, len(text)) + 1))[: size - 132]
    return bytes(header) + bytes(4) + body  # a tag count of 0


def grey16_png_with_trns(width: int = 64, height: int = 48) -> bytes:
    """A real 16-bit greyscale PNG whose tRNS chunk makes grey 7 transparent.

    The left half is that grey (transparent), the right half light grey (opaque).
    """
    img = Image.new("I;16", (width, height), 7)
    img.paste(Image.new("I;16", (width - width // 2, height), 50000), (width // 2, 0))
    out = io.BytesIO()
    img.save(out, "PNG", transparency=7)
    return out.getvalue()


def animated(fmt: str, colours: tuple[str, ...] = ("red", "blue", "lime")) -> bytes:
    """An animated GIF, WEBP or PNG (APNG): one frame per colour, 120x90, 100 ms each."""
    frames = [Image.new("RGB", (120, 90), colour) for colour in colours]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()
