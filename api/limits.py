"""Bounds on what one HTTP connection may hold: time to send a request, time to send a body,
and bytes sent after the answer.

uvicorn (0.55) has ``timeout_keep_alive`` (idle time *between* requests, armed only after a
response), ``limit_concurrency`` (503 beyond that many connections) and h11's header-size
cap, all set by ``bgworker api``. It has no bound on the time a client may take to send a
request: a connection that sends nothing, or its headers a byte at a time (slowloris), or a
body at 1 byte/s, is held for ever, and a few hundred of them fill ``limit_concurrency``
so that everybody else gets 503. Nor does it bound what it reads and throws away after an
early answer (a 413 before the body): a client may go on streaming for ever. So:

- :func:`bounded_h11` is uvicorn's own h11 protocol with one timer per connection: the
  request line and headers must be complete within ``header_timeout`` of the connection
  (or of the previous response), else the connection is closed (a ``408`` first if part of
  a request had arrived); a body still arriving ``body_timeout`` (+ a grace) after its
  headers is cut off; and after the response, at most ``discard_bytes`` of a body nobody
  reads are read and dropped, so the client, still sending, gets to read the answer
  (closing at once would reset the connection and lose the answer in the client's buffer).
- :class:`BodyDeadline` (ASGI) gives the application the same body deadline as an error it
  can answer: a body not received within ``BGWORKER_MAX_UPLOAD_SECONDS`` raises
  :class:`BodyTimeout`, answered ``408 request_timeout`` in the usual JSON form.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from worker.errors import InputError

# After an early answer, bytes of the unread body read and dropped before the connection
# is closed: room for an upload well past the limit, sent by a client that reads the
# answer only once it has sent everything (httpx, requests, urllib).
DISCARD_BYTES = 128 * 1024 * 1024
# The protocol cuts a body off this long after the application's deadline, so that the
# application's 408 goes out first.
BODY_GRACE_SECONDS = 5.0

TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class BodyTimeout(InputError):
    status = 408
    code = "request_timeout"


def body_timeout(seconds: float) -> BodyTimeout:
    return BodyTimeout(
        f"the request body did not arrive within {seconds:g} s (BGWORKER_MAX_UPLOAD_SECONDS); "
        "retry over a faster connection or send a smaller image"
    )


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within ``seconds`` of the
    request, else the application's ``receive`` raises :class:`BodyTimeout` (408)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def bounded_receive() -> Message:
            nonlocal complete
            if complete:  # only http.disconnect is left to wait for: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise body_timeout(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, bounded_receive, send)


def bounded_h11(
    header_timeout: float, body_timeout: float, discard_bytes: int = DISCARD_BYTES
) -> type[H11Protocol]:
    """uvicorn's h11 protocol with these bounds (give it to ``uvicorn.run(http=...)``)."""

    class BoundedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._phase: str | None = None
            self._timer: asyncio.TimerHandle | None = None
            self._discarded = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self._phase == "body" and cycle is not None and cycle.response_complete:
                # Answered already (a 413 before the body): read and drop, up to a bound.
                self._discarded += len(data)
                if self._discarded > discard_bytes:
                    self._close()
                    return
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def _watch(self) -> None:
            """Arm the timer of the phase the client is in: sending a request's head, or
            its body (none while the application works or the answer goes out)."""
            if self.transport.is_closing():
                return
            state = self.conn.their_state
            phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
            if phase == self._phase:
                return
            self._cancel()
            self._phase = phase
            if phase == "head":
                self._timer = self.loop.call_later(header_timeout, self._head_timeout)
            elif phase == "body":
                self._discarded = 0
                self._timer = self.loop.call_later(body_timeout + BODY_GRACE_SECONDS, self._close)

        def _head_timeout(self) -> None:
            self._timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            partial, _ = self.conn.trailing_data
            if partial:  # part of a request came: say why it is refused
                body = (
                    b'{"error":{"code":"request_timeout","message":"the request line and '
                    b'headers did not arrive within %d s; send the request at once"}}'
                    % header_timeout
                )
                self.transport.write(TIMEOUT_408 % (len(body), body))
            self._close()

        def _close(self) -> None:
            self._cancel()
            if not self.transport.is_closing():
                self.transport.close()

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    return BoundedH11Protocol
