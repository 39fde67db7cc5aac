"""The demo's connections: a listening socket, and uvicorn's h11 protocol with the timeouts it lacks.

uvicorn closes a keep-alive connection that stays idle ``timeout_keep_alive`` seconds after a
response, but it arms that timer only once a response is complete: a connection that never sends
a request, or sends half a request head and stops, is kept open for ever (uvicorn issue 1192 and
PR 1332 describe the gap). ``TimedH11Protocol`` adds the two missing timers, and cancels both
whenever the connection goes, however it goes (uvicorn cancels its own only on a clean close):

- idle: a new connection must start a request within ``timeout_keep_alive`` seconds, the same
  limit uvicorn applies between requests;
- head: once a request's first bytes arrive, its head (request line and headers) must be complete
  within ``read_timeout`` seconds. The body's own deadline is the app's (compare.serving.server):
  only the app knows how much body it still wants.

A connection that runs out of time is closed without an answer, as uvicorn closes an idle one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for the first request and for every request head."""

    read_timeout: float = 10.0  # seconds; protocol_with_timeouts() makes a subclass with its own
    head_deadline: asyncio.TimerHandle | None = None  # armed while a request head is arriving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP connection
        super().connection_made(transport)
        # idle until its first request, as between requests (uvicorn's own timer, the same handle)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.close_now)

    def data_received(self, data: bytes) -> None:
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and self.head_deadline is None:
            self.head_deadline = self.loop.call_later(self.read_timeout, self.close_now)
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # the head is complete: the app has the request (and its body's deadline)
            self.cancel_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_head_deadline()
        if self.timeout_keep_alive_task is not None:  # uvicorn cancels it only when exc is None
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def cancel_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def close_now(self) -> None:
        """Close a connection that ran out of time between requests or in a request's head."""
        self.head_deadline = None
        if not self.transport.is_closing():
            with contextlib.suppress(h11.LocalProtocolError):  # h11 may be past the point of a clean close
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()


def protocol_with_timeouts(read_timeout: float) -> type[TimedH11Protocol]:
    """A TimedH11Protocol whose request heads must arrive within ``read_timeout`` seconds."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"read_timeout": read_timeout})


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port) and listening; OSError if it cannot be."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may reuse the port at once
        listener.bind(address)
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    return listener
