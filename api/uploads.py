"""Reading an upload to disk without ever holding more than the limit.

The body is counted as it arrives from the ASGI server, so an oversized upload is
refused with 413 after at most ``limit`` bytes, whether it declares a Content-Length or
streams chunked. The format is judged by content, never by name or Content-Type.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from worker.errors import InvalidRequest, UploadTooLarge
from worker.storage import Storage

# Room for multipart boundaries and part headers around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
CHUNK = 256 * 1024


def too_large(limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"upload exceeds the limit of {limit} bytes (BGWORKER_MAX_UPLOAD_BYTES); "
        "send a smaller image"
    )


def limited(request: Request, limit: int, error: UploadTooLarge | None = None) -> Request:
    """The same request, whose body stream raises ``error`` (413) past ``limit`` bytes."""
    refusal = error or too_large(limit)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise refusal
    seen = 0
    receive = request.receive

    async def counting_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise refusal
        return message

    return Request(request.scope, counting_receive)


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


async def receive_upload(request: Request, storage: Storage, max_bytes: int) -> Path:
    """Write the uploaded image to a temporary file in storage and return its path.

    Accepts ``multipart/form-data`` with a ``file`` field, or the image as the raw body.
    The caller owns the returned file (publish it or delete it).
    """
    fd, path = storage.new_temp()
    try:
        with os.fdopen(fd, "wb") as out:
            if _is_multipart(request):
                req = limited(request, max_bytes + MULTIPART_OVERHEAD, too_large(max_bytes))
                async with req.form(max_files=1, max_fields=8) as form:
                    upload = form.get("file")
                    if not isinstance(upload, UploadFile):
                        raise InvalidRequest(
                            "multipart upload has no file field named 'file'; "
                            "send it as -F file=@photo.jpg"
                        )
                    while chunk := await upload.read(CHUNK):
                        out.write(chunk)
            else:
                async for chunk in limited(request, max_bytes).stream():
                    out.write(chunk)
        size = path.stat().st_size
        if size > max_bytes:
            raise too_large(max_bytes)
        if size == 0:
            raise InvalidRequest(
                "the upload is empty; send an image as the body or as field 'file'"
            )
        return path
    except BaseException:
        path.unlink(missing_ok=True)
        raise
