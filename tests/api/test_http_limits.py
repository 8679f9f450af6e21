"""HTTP bounds of ``bgworker api``: idle and slow connections, slow bodies, the connection
cap, and answers sent before a too-large body (real uvicorn, real sockets, real clients).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests import factories
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def _connect(api) -> socket.socket:  # type: ignore[no-untyped-def]
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=30)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Read until the server closes; return how long that took and what it sent."""
    sock.settimeout(seconds)
    t0 = time.monotonic()
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s; got {data!r}") from None
    return time.monotonic() - t0, data


def _body(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    return json.loads(body)  # type: ignore[no-any-return]


def test_an_idle_connection_and_a_slowloris_are_closed_within_the_header_timeout(start_api):
    api = start_api(BGWORKER_HEADER_TIMEOUT_SECONDS="1")
    idle = _connect(api)
    elapsed, data = _closed_within(idle, 5)
    assert data == b"" and 0.8 < elapsed < 3, (elapsed, data)

    slow = _connect(api)
    t0 = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    sent = 0
    with pytest.raises(OSError):  # a byte every 0.1 s: the server hangs up on us
        for byte in request:
            slow.send(bytes([byte]))
            sent += 1
            time.sleep(0.1)
    assert time.monotonic() - t0 < 3, "headers sent byte by byte held the connection"
    assert sent < len(request)

    # The same after a response on a kept-alive connection: the next request must come
    # at once too (keep-alive idle time is uvicorn's own, 5 s by default).
    kept = _connect(api)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while not first.endswith(b"}"):  # the whole first response: head, then JSON body
        first += kept.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")  # and then nothing more
    elapsed, data = _closed_within(kept, 5)
    assert elapsed < 3 and data.startswith(b"HTTP/1.1 408"), (elapsed, data)
    assert _body(data)["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert httpx.get(f"{api.base}/healthz").status_code == 200


def test_a_slow_body_is_cut_off_with_408(start_api):
    api = start_api(BGWORKER_MAX_UPLOAD_SECONDS="2")
    sock = _connect(api)
    sock.sendall(
        b"POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    png = factories.png()
    t0 = time.monotonic()
    response = b""
    sock.settimeout(0.2)
    for i in range(200):  # 5 bytes/s
        try:
            sock.send(png[i : i + 1])
            response += sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if response.endswith(b"}}"):
            break
    elapsed = time.monotonic() - t0
    assert response.startswith(b"HTTP/1.1 408"), response
    assert 1.8 < elapsed < 4, elapsed
    error = _body(response)["error"]
    assert error["code"] == "request_timeout"  # type: ignore[index]
    assert "BGWORKER_MAX_UPLOAD_SECONDS" in error["message"]  # type: ignore[index]
    # And the connection goes soon after, however slowly the client goes on sending.
    elapsed, _ = _closed_within(sock, 10)
    assert time.monotonic() - t0 < 9
    # A normal upload is unaffected.
    assert httpx.post(f"{api.base}/v1/images", content=png).status_code == 202


def test_connections_beyond_the_cap_get_503_and_the_api_recovers(start_api):
    api = start_api(BGWORKER_MAX_CONNECTIONS="5", BGWORKER_HEADER_TIMEOUT_SECONDS="30")
    held = [_connect(api) for _ in range(5)]
    time.sleep(0.3)
    refused = httpx.get(f"{api.base}/healthz", timeout=5)
    assert refused.status_code == 503, refused.text
    for sock in held:
        sock.close()

    def healthy() -> bool:
        return httpx.get(f"{api.base}/healthz", timeout=5).status_code == 200

    wait_for(healthy, timeout=5, what="the API to serve again once the connections went")
    with httpx.Client(base_url=api.base, timeout=5) as client:
        assert all(client.get("/readyz").status_code == 200 for _ in range(20))


# -- answers before the body: a 60 MB upload over a 2 MiB limit (TEST_ENV) ------------

BIG = 60 * 1024 * 1024


def _assert_413(status: int, body: str) -> None:
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_60_mb_upload_gets_its_413_with_httpx(start_api):
    api = start_api()
    data = b"\0" * BIG

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, BIG, 1 << 20):  # chunked: no Content-Length to refuse early by
            yield data[i : i + (1 << 20)]

    for content in (data, chunks()):
        resp = httpx.post(f"{api.base}/v1/images", content=content, timeout=60)
        _assert_413(resp.status_code, resp.text)
    files = {"file": ("big.jpg", data, "image/jpeg")}
    resp = httpx.post(f"{api.base}/v1/images", files=files, timeout=60)
    _assert_413(resp.status_code, resp.text)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize(
    "args",
    [
        ["--data-binary", "@{file}"],
        ["-H", "Expect:", "--data-binary", "@{file}"],
        ["-H", "Transfer-Encoding: chunked", "--data-binary", "@{file}"],
        ["-F", "file=@{file}"],
    ],
    ids=["raw", "no-expect", "chunked", "multipart"],
)
def test_a_60_mb_upload_gets_its_413_with_curl(start_api, tmp_path: Path, args):
    api = start_api()
    big = tmp_path / "big.jpg"
    with big.open("wb") as out:
        out.truncate(BIG)
    command = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", f"{api.base}/v1/images"]
    done = subprocess.run(
        [*command, *(a.format(file=big) for a in args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    _assert_413(int(status), body)


def test_a_client_streaming_on_after_the_413_is_cut_off(start_api):
    api = start_api()
    sock = _connect(api)
    sock.sendall(b"POST /v1/images HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"\0" * (1 << 20))
    sent = 0
    with pytest.raises(OSError):  # broken pipe or reset: the server stopped reading
        while sent < 1024 * 1024 * 1024:  # a body without end, 1 GiB at most here
            sock.sendall(chunk)
            sent += len(chunk)
    assert sent < 256 * 1024 * 1024, f"{sent} bytes read and dropped after the answer"
