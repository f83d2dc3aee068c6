"""What a connection's two sides share: the limits and timeouts of HTTP/1.1 as devserve serves
it, what is known of a request being served and of the server, and the plain answers the
server writes itself (refusals, timeouts)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus

from devserve._version import __version__

__all__ = [
    "ClientGone",
    "RequestInfo",
    "ServerInfo",
    "close_connection",
    "error_response",
    "http_date",
    "log_bad_request",
]

_access_logger = logging.getLogger("devserve.access")

READ_SIZE = 65536
HEAD_TIMEOUT = 10.0  # seconds a request head may take to arrive once it has begun
BODY_TIMEOUT = 30.0  # seconds a request body (or a response) may stall
# A body slower than this (bytes per second spent waiting for it, once it has been waited
# for RATE_WINDOW seconds) is a 408: a client trickling bytes must not hold a thread.
MIN_BODY_RATE = 1024
RATE_WINDOW = 10.0
CONTINUE_WAIT = 1.0  # seconds to wait for a body the app did not ask for (100-continue)
LINGER_SECONDS = 2.0  # at most, reading what a client still sends after the last response
LINGER_BYTES = 64 << 20
DISCARD_LIMIT = 1 << 20  # unread request body skipped to keep the connection; above it, close
SERVER_HEADER = f"devserve/{__version__}".encode()


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What a request thread is serving, for stack dumps and limits."""

    method: str
    path: str
    client: str
    started: float  # time.monotonic()

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    def describe(self) -> dict[str, object]:
        """For the status: method, path, client, age in seconds."""
        return {
            "method": self.method,
            "path": self.path,
            "client": self.client,
            "age_s": round(self.age, 3),
        }


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """What the WSGI environ says about the server."""

    host: str
    port: int
    multiprocess: bool = False  # prefork: several processes serve the app
    keep_alive: bool = True  # False: every response closes its connection (a busy worker)
    max_body: int = 128 << 20  # bytes of request body: above it, 413
    # devserve's own routes (``/__devserve__/``): the paths the control loop answers, and
    # how a connection that asks for one reaches it (its descriptor, the request's target).
    own_paths: frozenset[str] = frozenset()
    to_loop: Callable[[int, str], None] | None = dataclasses.field(default=None, compare=False)


def close_connection(sock: socket.socket, linger: bool = False) -> None:
    """Close a connection after its last response: a FIN first, so the client reads it
    all. If the client is still sending (a request body nobody read), what it sends is
    read and dropped for a moment first (``linger``): closing with unread data makes the
    kernel answer with a reset, which can destroy the response before the client read it."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        linger = False
    if linger:
        deadline = time.monotonic() + LINGER_SECONDS
        dropped = 0
        with contextlib.suppress(OSError):
            while dropped < LINGER_BYTES and (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                data = sock.recv(READ_SIZE)
                if not data:
                    break
                dropped += len(data)
    sock.close()


def log_bad_request(client: str, status: int, reason: str) -> None:
    """One line per refused request, its reason cut short (it may quote the request)."""
    shown = reason if len(reason) <= 200 else reason[:200] + "..."
    _access_logger.warning(
        "%s bad request (%d): %s", client, status, shown, extra={"status": status}
    )


class ClientGone(Exception):
    """The client closed the connection, or broke the protocol, in the request body."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # a status to answer with, if the response has not started


def error_response(status: int, body: bytes, close: bool = True) -> bytes:
    """A whole plain-text response, head and body, for the server's own answers."""
    reason = HTTPStatus(status).phrase.encode()
    return response_head(status, reason, plain_headers(body, close)) + body


def response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, lines)


def plain_headers(body: bytes, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
    ]
    return [*headers, (b"Connection", b"close")] if close else headers


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_date_cache = threading.local()


def http_date(now: float | None = None) -> bytes:
    """The ``Date`` header value (RFC 9110 IMF-fixdate), English whatever the locale."""
    second = int(time.time() if now is None else now)
    cached = getattr(_date_cache, "value", None)
    if cached is not None and cached[0] == second:
        return cached[1]  # type: ignore[no-any-return]
    t = time.gmtime(second)
    value = (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode()
    _date_cache.value = (second, value)
    return value
