"""Event streams cannot starve the API: many idle streams, a cap, a lifetime.

A real ``bgworker api`` (uvicorn) on loopback, real HTTP clients holding real streams.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx2 as httpx
import pytest

pytestmark = pytest.mark.slow


async def _first_event(client: httpx.AsyncClient, url: str, opened: list[object]) -> None:
    """Open a stream, read its first event, then hold it open without reading."""
    request = client.build_request("GET", url)
    response = await client.send(request, stream=True)
    assert response.status_code == 200, await response.aread()
    lines = response.aiter_lines()
    async for line in lines:
        if line.startswith("data: "):
            break
    # Kept with the response: a line iterator left to the garbage collector closes the
    # stream it reads.
    opened.append((response, lines))


def test_500_idle_streams_leave_enqueue_and_readiness_as_fast_as_before(start_api):
    api = start_api()
    job = httpx.post(f"{api.base}/v1/jobs", json={"task": "debug.sleep", "args": {}})
    events = f"{api.base}{job.json()['links']['events']}"  # no worker: it stays queued

    def timed(method: str, path: str, **kw: object) -> tuple[int, float]:
        t0 = time.perf_counter()
        resp = httpx.request(method, f"{api.base}{path}", timeout=10, **kw)  # type: ignore[arg-type]
        return resp.status_code, time.perf_counter() - t0

    def probe() -> list[tuple[int, float]]:
        body = {"task": "debug.noop"}
        return [timed("POST", "/v1/jobs", json=body) for _ in range(20)] + [
            timed("GET", "/readyz") for _ in range(20)
        ]

    before = probe()

    async def hold_streams() -> list[tuple[int, float]]:
        limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            opened: list[object] = []
            await asyncio.gather(*(_first_event(client, events, opened) for _ in range(500)))
            assert len(opened) == 500
            # The streams stay open, blocked on the job's next change, while we probe.
            during = await asyncio.to_thread(probe)
            for response, _ in opened:  # type: ignore[misc]
                await response.aclose()
            return during

    during = asyncio.run(hold_streams())
    assert all(code in (200, 202) for code, _ in during), during
    slowest_before = max(seconds for _, seconds in before)
    slowest_during = max(seconds for _, seconds in during)
    assert slowest_during < max(0.5, 5 * slowest_before), (before, during)


def test_streams_beyond_the_cap_get_503_and_a_freed_slot_is_reused(start_api):
    api = start_api(BGWORKER_MAX_EVENT_STREAMS="3")
    job = httpx.post(f"{api.base}/v1/jobs", json={"task": "debug.sleep", "args": {}})
    events = f"{api.base}{job.json()['links']['events']}"

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            opened: list[object] = []
            await asyncio.gather(*(_first_event(client, events, opened) for _ in range(3)))
            refused = await client.get(events)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert int(refused.headers["retry-after"]) > 0
            # Enqueues and reads are not streams: unaffected.
            assert (
                await client.post(f"{api.base}/v1/jobs", json={"task": "debug.noop"})
            ).status_code == 202
            await opened[0][0].aclose()  # type: ignore[index]
            await asyncio.sleep(0.5)
            again: list[object] = []
            await _first_event(client, events, again)
            for response, _ in [*opened[1:], *again]:  # type: ignore[misc]
                await response.aclose()

    asyncio.run(scenario())


def test_stream_ends_after_its_lifetime_and_resumes_without_a_gap(start_api, start_worker):
    api = start_api(BGWORKER_EVENT_STREAM_MAX_SECONDS="2", BGWORKER_SSE_KEEPALIVE_SECONDS="1")
    job = httpx.post(f"{api.base}/v1/jobs", json={"task": "debug.sleep", "args": {"seconds": 4}})
    events = f"{api.base}{job.json()['links']['events']}"
    start_worker()
    seen: list[dict[str, object]] = []
    ids: list[tuple[int, int]] = []
    last_id = None
    connections = 0
    t0 = time.monotonic()
    for _ in range(10):  # what an EventSource does: reconnect with Last-Event-ID
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with httpx.stream("GET", events, headers=headers, timeout=30) as resp:
            if resp.status_code == 204:
                break
            connections += 1
            opened = time.monotonic()
            for line in resp.iter_lines():
                if line.startswith("id: "):
                    last_id = line[4:]
                    ms, seq = last_id.split("-")
                    ids.append((int(ms), int(seq)))
                elif line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
            assert time.monotonic() - opened < 6, "a stream outlived its lifetime"
        if seen and seen[-1]["state"] == "succeeded":
            break
    assert time.monotonic() - t0 < 30
    assert connections >= 2, "a 4 s job outlasts one 2 s stream"
    assert seen[-1]["state"] == "succeeded", seen
    assert ids == sorted(set(ids)), "an event came twice or out of order across reconnects"
