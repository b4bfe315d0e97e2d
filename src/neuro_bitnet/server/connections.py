"""Connection hygiene under uvicorn's h11 protocol: read deadlines and a connection limit.

uvicorn times out idle keep-alive connections but not a client that connects and sends
nothing, or half a request head; and its ``limit_concurrency`` counts idle connections, so a
few hundred silent sockets turn every request into a plain-text 503. This protocol adds:

* a **head deadline**: a connection must deliver a complete request head within
  ``read_timeout`` seconds of opening (or of its previous response), else it gets a 408 JSON
  error and is closed (the body has its own deadline in the app, see ``app.read_body``);
* a **connection limit** separate from the model's request queue: at the limit, the oldest
  connection with no request in progress is closed to make room; only when every connection
  is busy with a request does a newcomer get a 503 JSON error;
* JSON bodies for the protocol-level errors (malformed HTTP gets a 400 in the API's shape).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from neuro_bitnet.server.config import DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT

log = logging.getLogger("neuro_bitnet.server")

KEEP_ALIVE_TIMEOUT = 10.0  # seconds an idle keep-alive connection stays open


def raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response with the API's JSON error body; closes the connection."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error" if status < 500
                                 else "server_error", "param": None, "code": code}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    return head + body


class ConnectionGuard:
    """The open connections of one server, oldest first, and the limit on their number."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 read_timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._open: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, conn: "GuardedH11Protocol") -> bool:
        """Register ``conn``; False (and the caller refuses it) when every slot is busy."""
        while len(self._open) >= self.max_connections:
            idle = next((c for c in self._open if not c.in_request), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.forget(idle)
            idle.transport.close()
        self._open[conn] = None
        return True

    def forget(self, conn: "GuardedH11Protocol") -> None:
        self._open.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a head deadline, the guard's limit and JSON protocol errors."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._head_timer: asyncio.TimerHandle | None = None

    @property
    def in_request(self) -> bool:
        """True from a complete request head until its response is complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            log.warning("refused a connection: all %d connections have a request in progress",
                        self.guard.max_connections)
            transport.write(raw_error(503, "Service Unavailable",
                                      f"the server has {self.guard.max_connections} connections with requests "
                                      "in progress; retry shortly", "too_many_connections"))
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_request:
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.in_request:
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        self._disarm_head_timer()
        self.transport.write(raw_error(400, "Bad Request", f"malformed HTTP request: {msg}", "invalid_http"))
        self.transport.close()

    # -- the head deadline -----------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self.guard.read_timeout, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.in_request or self.transport.is_closing():
            return
        self.guard.timed_out += 1
        partial, _ = self.conn.trailing_data
        if partial:  # half a request head: say why before closing
            self.transport.write(raw_error(408, "Request Timeout",
                                           f"the request head did not arrive within {self.guard.read_timeout:g}s",
                                           "request_timeout"))
        self.guard.forget(self)
        self.transport.close()
