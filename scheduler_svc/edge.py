"""The scheduler's HTTP edge below the application: how much a client may send, for how long,
and how many connections it may hold, enforced on the socket before anything is parsed further.

uvicorn's protocol has no limit on the size or number of request headers, and a connection that
never sends a request (or sends it a byte at a time) is never timed out. This protocol adds:

- the request line and headers together at most `max_header_bytes`, at most `max_headers`
  header fields: otherwise `431` and the connection is closed, without reading the rest;
- a whole request (head and body) must arrive within `request_timeout` of its first byte, or of
  the connection opening: otherwise the connection is closed (`408` when nothing was answered);
- at most `max_connections` open connections: one more is closed as soon as it is accepted.

Idle keep-alive connections are closed after uvicorn's `timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    request_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000


HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


def _reply(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(limits: EdgeLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these limits (pass it as uvicorn's `http`)."""

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._deadline: asyncio.TimerHandle | None = None
            self._start_head()
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.abort()  # refused before a byte is read: descriptors stay bounded
                return
            self._arm_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None:
                self._arm_deadline()  # the first byte of a request on a kept-alive connection
            if self._reading_head:
                problem = self._scan_head(data)
                if problem:
                    self.transport.write(_reply(431, "Request Header Fields Too Large", problem))
                    self.transport.close()
                    return
            super().data_received(data)

        def on_message_complete(self) -> None:
            self._disarm_deadline()
            self._start_head()
            super().on_message_complete()

        def _start_head(self) -> None:
            self._reading_head = True
            self._head_bytes = 0
            self._head_lines = 0
            self._tail = b""

        def _scan_head(self, data: bytes) -> str:
            """Count the head's bytes and lines up to the blank line that ends it, before the
            parser sees them; the problem with it, if any."""
            seen = self._tail + data
            ends = [i + len(mark) for mark in HEAD_ENDS if (i := seen.find(mark)) >= 0]
            head = data if not ends else data[: max(min(ends) - len(self._tail), 0)]
            self._head_bytes += len(head)
            self._head_lines += head.count(b"\n")
            self._reading_head = not ends
            self._tail = seen[-3:]
            if self._head_bytes > limits.max_header_bytes:
                return f"request line and headers larger than {limits.max_header_bytes} bytes"
            # The request line and the closing blank line are not headers.
            if self._head_lines - 2 > limits.max_headers:
                return f"more than {limits.max_headers} request headers"
            return ""

        def _arm_deadline(self) -> None:
            self._deadline = self.loop.call_later(limits.request_timeout, self._on_deadline)

        def _disarm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _on_deadline(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or not cycle.response_started or cycle.response_complete:
                detail = f"request not received within {limits.request_timeout:g} s"
                self.transport.write(_reply(408, "Request Timeout", detail))
            self.transport.close()

    return GuardedProtocol


def uvicorn_settings(limits: EdgeLimits) -> dict[str, Any]:
    """Keyword arguments for uvicorn.Config that put these limits in force."""
    return {
        "http": guarded_protocol(limits),
        "timeout_keep_alive": limits.keep_alive_timeout,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }
