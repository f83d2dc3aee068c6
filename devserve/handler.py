"""One HTTP/1.1 connection served to a WSGI app (PEP 3333), on the h11 protocol engine.

devserve speaks HTTP through h11 rather than Werkzeug's development request handler: h11
is strict (it rejects malformed framing that ``http.server`` lets through), supports
keep-alive, and imports in a fraction of the time ``werkzeug.serving`` takes (``http.server``,
``email``, ``ssl``...). A phoenix reload imports it again, so that time is reload latency.
Werkzeug still provides the debugger, routing and request objects, imported by what uses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import h11

from devserve import __version__

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

__all__ = ["HTTPConnection", "RequestInfo", "ServerInfo"]

_logger = logging.getLogger("devserve.servers")
_access_logger = logging.getLogger("devserve.access")

READ_SIZE = 65536
MAX_HEAD = 65536  # bytes of request line and headers: above it, 431
MAX_TARGET = 8192  # bytes of request target: above it, 414
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


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    """What the WSGI environ says about the server."""

    host: str
    port: int
    multiprocess: bool = False  # prefork: several processes serve the app
    keep_alive: bool = True  # False: every response closes its connection (a busy worker)
    max_body: int = 128 << 20  # bytes of request body: above it, 413


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


class _ClientGone(Exception):
    """The client closed the connection, or broke the protocol, in the request body."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status  # a status to answer with, if the response has not started


class HTTPConnection:
    """Serves the requests of one accepted connection, one after the other."""

    def __init__(
        self,
        sock: socket.socket,
        client: Any,
        app: WSGIApplication,
        server: ServerInfo,
        on_request: Callable[[RequestInfo | None], None] = lambda info: None,
        received: bytes = b"",
    ) -> None:
        self.sock = sock
        self.client = client
        self.client_host = client[0] if isinstance(client, tuple) and client else "-"
        self.app = app
        self.server = server
        self.on_request = on_request  # told when a request starts (info) and ends (None)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._responding = False  # a response to the current request has begun
        self.unread = False  # closed with a request body still coming
        self._head = bytearray()  # the raw bytes of the request head being received
        self._head_fed = False  # h11 has bytes of this request (empty lines before are not)
        self._h11_fed = 0  # how much of _head h11 has (the loop may hold more of a body)
        self._body_length: int | None = None  # the body the loop receives (0: none)
        self._head_deadline = 0.0  # once it has begun (0: not yet)
        self._read_ahead: Any = None  # what feed() found: an event or a protocol error
        self._body_read = 0
        self._body_waited = 0.0  # seconds spent waiting for the body's bytes
        self._chunks: ChunkedBody | None = None  # checks a chunked body's framing
        if received:  # read by the control loop of a previous image
            self.feed(received)

    @property
    def head_complete(self) -> bool:
        """A whole request head (or a malformed one) is in: serve() can answer it."""
        return self._read_ahead is not None

    @property
    def received(self) -> bytes:
        """The bytes of the request received so far and not served yet: its head (and what
        the control loop received of its body), for the next image to go on from."""
        return bytes(self._head)

    def body_missing(self, limit: int) -> int:
        """Bytes of the request's body not received yet, when the control loop is to
        receive them before a thread serves it: a Content-Length of at most ``limit``, no
        100-continue expected (the client waits for it), and a head that passes the
        checks (a refused one is answered at once). Else 0, as when it is all in."""
        if self._body_length is None:
            self._body_length = self._loop_body_length(limit)
        if not self._body_length:
            return 0
        head_end = _HEAD_END.search(self._head)
        received = len(self._head) - head_end.end() if head_end else 0
        return max(0, self._body_length - received)

    def _loop_body_length(self, limit: int) -> int:
        request = self._read_ahead
        if not isinstance(request, h11.Request) or self.h11.they_are_waiting_for_100_continue:
            return 0
        length = _content_length(request)
        if not length or length > limit or _check(request, self._head, self.server):
            return 0
        return length

    def feed_body(self, data: bytes) -> None:
        """More of the request, read by the control loop once the head is in. Kept once,
        here: h11 gets it when a thread takes the request (``body_in``)."""
        self._head += data

    def body_in(self) -> None:
        """A thread takes the request: h11 gets what the loop received of its body."""
        if self._h11_fed < len(self._head):
            self.h11.receive_data(bytes(self._head[self._h11_fed :]))
            self._h11_fed = len(self._head)

    def feed(self, data: bytes) -> bool:
        """Take bytes read by someone else (the control loop reads request heads without
        a thread). True once a thread should take over: a whole head arrived, or a
        malformed one did (``serve()`` answers either)."""
        if self._read_ahead is not None:
            return True
        self._take(data)
        try:
            event = self.h11.next_event()
        except h11.RemoteProtocolError as error:
            self._read_ahead = error
            return True
        if event is h11.NEED_DATA:
            return False
        self._read_ahead = event
        return True

    def serve(self) -> bool:
        """Serve requests until the connection has none waiting. True when it stays open
        and idle with nothing buffered (the caller may wait for its next request without a
        thread); False when it must be closed."""
        while True:
            event = self._next_event()
            if not isinstance(event, h11.Request):
                return False  # closed by the client, or a bad request already answered
            if not self._respond(event) or not self._finish_cycle():
                # A body the client is still sending: the closer lingers (close_connection).
                self.unread = self.h11.their_state is h11.SEND_BODY
                return False
            if not self._head or not self.feed(b""):
                # Idle, or the start of a pipelined head: the caller waits for the rest
                # without a thread (see ``received``).
                return True

    # --- receiving ---

    def _next_event(self) -> Any:
        """The next h11 event; a malformed request is answered here (and gives None)."""
        try:
            event = self._read_head()
            problem = (
                _check(event, self._head, self.server) if isinstance(event, h11.Request) else None
            )
            if problem is None and _is_chunked(event):
                # What came with the head: the start of the body (maybe all of it).
                self._chunks = ChunkedBody()
                head_end = _HEAD_END.search(self._head)
                problem = self._chunks.check(
                    bytes(self._head[head_end.end() :]) if head_end else b""
                )
            self._head = bytearray()
            if problem is None:
                return event
            self._reject(*problem)
            # A body still coming (a 413): the closer drops it first, so the client reads
            # the answer instead of a reset (as for a body the app left unread).
            self.unread = self.h11.their_state is h11.SEND_BODY
        except h11.RemoteProtocolError as error:
            self._reject(*_diagnose(error, self._head))
        except TimeoutError:
            self._reject(408, f"the request head took over {HEAD_TIMEOUT:g}s")
        except (OSError, _ClientGone):
            pass  # reset by the client
        return None

    def _read_head(self) -> Any:
        self.body_in()
        read_ahead, self._read_ahead = self._read_ahead, None
        if isinstance(read_ahead, Exception):
            raise read_ahead
        if read_ahead is not None:
            return read_ahead
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                self.sock.settimeout(BODY_TIMEOUT)
                return event
            if self._head_deadline:  # begun: the rest is due by then
                self.sock.settimeout(max(0.001, self._head_deadline - time.monotonic()))
            data = self._recv()
            if data and not self._head_deadline:
                self._head_deadline = time.monotonic() + HEAD_TIMEOUT
            if not data:
                self.h11.receive_data(b"")  # the end: h11 tells what it means
            self._take(data)

    def _take(self, data: bytes) -> None:
        """Bytes of a request head (and what follows it). The empty lines a client may send
        before a request line (RFC 9112 2.2) are dropped, not given to h11."""
        if not data:
            return
        self._head += data
        if self._head_fed:
            self.h11.receive_data(data)
            self._h11_fed = len(self._head)
            return
        start = _EMPTY_LINES.match(self._head).end()  # type: ignore[union-attr]
        del self._head[:start]
        if self._head and self._head != b"\r":  # a request line has begun
            self._head_fed = True
            self.h11.receive_data(bytes(self._head))
            self._h11_fed = len(self._head)

    def _recv(self) -> bytes:
        if self.h11.they_are_waiting_for_100_continue and not self._responding:
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._responding = False
        return self.sock.recv(READ_SIZE)

    def _reject(self, status: int, reason: str) -> None:
        """Answer a request that never reaches the app; the connection closes after."""
        log_bad_request(self.client_host, status, reason)
        if self._responding:
            return  # a response was under way: closing is all that is left
        self.send_error(status, f"Bad request: {reason}\n".encode())

    def read_body(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the request body (less only at its end)."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as error:
                raise _ClientGone(str(error), error.error_status_hint) from None
            if event is h11.NEED_DATA:
                began = time.monotonic()
                try:
                    data = self._recv()
                except TimeoutError:
                    raise _ClientGone(f"the body stalled for {BODY_TIMEOUT:g}s", 408) from None
                except OSError as error:
                    raise _ClientGone(str(error)) from error
                self._body_waited += time.monotonic() - began
                if self._body_waited > RATE_WINDOW and self._body_read < (
                    MIN_BODY_RATE * self._body_waited
                ):  # a body trickled to hold a thread: never sends enough to stall
                    raise _ClientGone(f"the body came slower than {MIN_BODY_RATE} bytes/s", 408)
                if self._chunks is not None and (problem := self._chunks.check(data)):
                    raise _ClientGone(problem[1], problem[0])
                self.h11.receive_data(data)
            elif isinstance(event, h11.Data):
                self._body_read += len(event.data)
                if self._body_read > self.server.max_body:
                    raise _ClientGone(f"request body over {self.server.max_body} bytes", 413)
                return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b""
            else:  # ConnectionClosed: the body is shorter than announced
                raise _ClientGone("the body ended before its announced length", 400)

    # --- responding ---

    def _respond(self, request: h11.Request) -> bool:
        started = time.monotonic()
        method = request.method.decode("latin-1")
        target = request.target.decode("latin-1")
        self.on_request(RequestInfo(method, target, self.client_host, started))
        response = _Response(self, request)
        try:
            response.run()
        finally:
            self.on_request(None)
        if _access_logger.isEnabledFor(logging.INFO):
            version = request.http_version.decode()
            _access_logger.info(
                '%s "%s %s HTTP/%s" %s %s %.1fms',
                self.client_host,
                method,
                target,
                version,
                response.status_code or "-",
                response.sent,
                (time.monotonic() - started) * 1000,
                extra={"status": response.status_code},
            )
        return response.complete

    def _finish_cycle(self) -> bool:
        """Skip what the app left of the request body, then expect the next request (h11
        only parses: a fresh parser takes what followed this request)."""
        # Answered without reading a body announced with "Expect: 100-continue": the client
        # may send it anyway, or not at all. Skip it if it comes soon, else close.
        waiting = self.h11.they_are_waiting_for_100_continue
        skipped = 0
        try:
            if waiting:
                self.sock.settimeout(CONTINUE_WAIT)
            while self.h11.their_state is h11.SEND_BODY and skipped <= DISCARD_LIMIT:
                skipped += len(self.read_body(READ_SIZE)) or 1
            if waiting:
                self.sock.settimeout(BODY_TIMEOUT)
        except (h11.ProtocolError, _ClientGone, OSError):
            return False
        if self.h11.their_state is not h11.DONE:
            return False
        following, closed = self.h11.trailing_data
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._responding = False
        self._head, self._head_fed, self._h11_fed = bytearray(), False, 0
        self._body_length = None
        self._take(following)  # a pipelined request's start
        if closed:
            self.h11.receive_data(b"")
        self._head_deadline = time.monotonic() + HEAD_TIMEOUT if self._head else 0.0
        self._body_read, self._body_waited = 0, 0.0
        self._chunks = None
        return True

    def _write(self, data: bytes) -> None:
        self._responding = True
        try:
            self.sock.sendall(data)
        except OSError as error:
            raise _ClientGone(str(error)) from error

    def send_error(self, status: int, body: bytes, close: bool = True) -> None:
        """A plain-text error response; unless told otherwise, the connection closes."""
        self._responding = True
        with contextlib.suppress(OSError):
            self.sock.sendall(error_response(status, body, close))


class _InvalidResponse(Exception):
    """The app's response breaks HTTP (a bad header, more bytes than its Content-Length)."""


class _Response:
    """One request's trip through the app: environ in, status, headers and body out. The
    bytes are written here (h11 only parses requests: its writer validates every header
    again, which cost a third of a small request's time)."""

    def __init__(self, connection: HTTPConnection, request: h11.Request) -> None:
        self.connection = connection
        self.request = request
        self.head_only = request.method == b"HEAD"
        self.status_code = 0  # once start_response was called
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_sent = False  # written to the socket
        self.framing = ""  # "length", "chunked", "close" (the end of the body is the close), "none"
        self.length = 0  # with "length": the Content-Length
        self.keep_alive = False
        self.sent = 0  # body bytes
        self.complete = False  # the whole response went out and the connection can go on

    def run(self) -> None:
        environ = _environ(self.connection, self.request)
        try:
            self._run(environ)
        finally:
            # Werkzeug's request and the environ refer to each other: without the cut, the
            # request (with its body, parsed) stays until the cyclic collector runs, and
            # sequential large requests pile up (1.2 GB RSS after 20 bodies of 30 MiB).
            environ.pop("werkzeug.request", None)
            environ["wsgi.input"] = _NO_INPUT

    def _run(self, environ: WSGIEnvironment) -> None:
        try:
            body = self.connection.app(environ, self.start_response)
            try:
                if isinstance(body, (list, tuple)) and not self.headers_sent:
                    self._set_length(body)
                for chunk in body:
                    if chunk:
                        self.write(chunk)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            self._end()
            self.complete = self.keep_alive
        except _ClientGone as gone:
            if gone.status:  # a malformed body, not a vanished client
                log_bad_request(self.connection.client_host, gone.status, str(gone))
                self._fail(gone.status, f"Bad request body: {gone}\n".encode())
        except _InvalidResponse as error:
            _logger.error("invalid response to %s: %s", self._describe(), error)
            # Not the app's text: it may carry what a client sent (a status built from it).
            self._fail(
                500, b"Internal Server Error: the app's response was invalid; see the log.\n"
            )
        except (Exception, SystemExit):  # sys.exit() in a request is the app's error too
            _logger.exception("error in the app while serving %s", self._describe())
            message = b"Internal Server Error: the app raised an exception; see the log.\n"
            self._fail(500, message, close=not self._may_keep_alive())

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            if self.headers_sent:
                raise exc_info[1].with_traceback(exc_info[2])
        elif self.status_code:
            raise AssertionError("start_response() called again without exc_info")
        if not isinstance(status, str) or not _STATUS.fullmatch(status):
            # A line break in it would split the response (a header or a response injected).
            raise _InvalidResponse(f"status {status!r} is not a code of 100-599 and a reason")
        code, _, reason = status.partition(" ")
        self.status_code = int(code)
        self.reason = reason.encode("latin-1")
        self.headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        return self.write

    def write(self, data: bytes) -> None:
        if not self.status_code:
            raise AssertionError("write() before start_response()")
        head = b"" if self.headers_sent else self._compose_head()
        if self.framing == "none" or not data:
            payload = b""
        elif self.framing == "chunked":
            payload = b"%x\r\n%s\r\n" % (len(data), data)
        else:
            if self.framing == "length" and self.sent + len(data) > self.length:
                raise _InvalidResponse(f"more body than its Content-Length of {self.length} bytes")
            payload = data
        if head or payload:
            self.connection._write(head + payload)
            self.headers_sent = True
        if payload:
            self.sent += len(data)

    def _end(self) -> None:
        if not self.headers_sent:
            self.write(b"")  # the head of an empty body
        if self.framing == "chunked":
            self.connection._write(b"0\r\n\r\n")
        elif self.framing == "length" and self.sent < self.length:
            self.keep_alive = False  # the client waits for bytes that never come: close
            raise _InvalidResponse(
                f"{self.sent} bytes of body for a Content-Length of {self.length}"
            )

    def _set_length(self, body: list[bytes] | tuple[bytes, ...]) -> None:
        """A body given whole gets a Content-Length, saving chunked encoding."""
        if self.status_code in (204, 304) or self.status_code < 200:
            return  # no body, and no Content-Length either
        if not any(name.lower() in _FRAMING for name, _ in self.headers):
            self.headers.append((b"Content-Length", str(sum(map(len, body))).encode()))

    def _compose_head(self) -> bytes:
        """The status line and headers, with devserve's framing: Content-Length when the
        app gave one, else chunked (HTTP/1.1) or the end of the connection (HTTP/1.0)."""
        headers = []
        names = set()
        length = None
        app_closes = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding":
                continue  # the framing is the server's
            if lowered == b"content-length":
                if not value.isdigit():
                    raise _InvalidResponse(f"Content-Length {value!r} is not a number")
                length = int(value)
            elif lowered == b"connection":  # hop-by-hop: the server's to say
                app_closes = app_closes or b"close" in value.lower()
                continue
            names.add(lowered)
            headers.append((name, value))
        _validate(headers)
        request = self.request
        keep_alive = self._may_keep_alive() and not app_closes
        if self.head_only or self.status_code in (204, 304) or self.status_code < 200:
            self.framing = "none"
        elif length is not None:
            self.framing, self.length = "length", length
        elif request.http_version != b"1.0":
            self.framing = "chunked"
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            self.framing, keep_alive = "close", False
        if b"server" not in names:
            headers.append((b"Server", SERVER_HEADER))
        if b"date" not in names:
            headers.append((b"Date", http_date()))
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        self.keep_alive = keep_alive
        return _head(self.status_code, self.reason, headers)

    def _fail(self, status: int, body: bytes, close: bool = True) -> None:
        """Answer with an error instead, if nothing of the response reached the client
        (otherwise closing the connection is all that is left)."""
        if self.headers_sent:
            return  # the client has part of the response already
        self.status_code = status
        self.connection.send_error(status, body, close)
        self.complete = not close

    def _may_keep_alive(self) -> bool:
        request = self.request
        return (
            self.connection.server.keep_alive
            and request.http_version != b"1.0"
            and b"close" not in _connection_options(request.headers)
        )

    def _describe(self) -> str:
        return f"{self.request.method.decode('latin-1')} {self.request.target.decode('latin-1')}"


_TOKENS = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+(?:\n[-!#$%&'*+.^_`|~0-9A-Za-z]+)*")
# RFC 9112's status-line: three digits, a space and a reason of tabs, spaces, visible
# characters and obs-text (latin-1 above 0x7f); the space may be left out with no reason.
_STATUS = re.compile(r"[1-5][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?")


def _validate(headers: list[tuple[bytes, bytes]]) -> None:
    """No header injection: names are tokens, values hold no control character but a tab
    (CR, LF, NUL, VT, DEL...; checked all at once: this runs for every response)."""
    if not headers:
        return
    if not _TOKENS.fullmatch(b"\n".join(name for name, _ in headers)):
        raise _InvalidResponse("a header name that is not a token")
    if _CONTROL.search(b"".join(value for _, value in headers)):
        raise _InvalidResponse("a header value with a control character (a line break...)")


def error_response(status: int, body: bytes, close: bool = True) -> bytes:
    """A whole plain-text response, head and body, for the server's own answers."""
    reason = HTTPStatus(status).phrase.encode()
    return _head(status, reason, _plain_headers(body, close)) + body


def _head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, lines)


def _connection_options(headers: Any) -> bytes:
    return b",".join(value for name, value in headers if name == b"connection").lower()


_FRAMING = (b"content-length", b"transfer-encoding")
MAX_HEADERS = 100  # header lines in a request: above it, 431


def _check(
    request: h11.Request, head: bytes | bytearray, server: ServerInfo
) -> tuple[int, str] | None:
    """What h11 lets through but a careful server refuses: (status, reason), or None.
    ``head`` holds the raw bytes received for it (and maybe more)."""
    return _check_request_line(request) or _check_headers(request, head, server)


def _check_request_line(request: h11.Request) -> tuple[int, str] | None:
    version = request.http_version
    if not version.startswith(b"1."):  # HTTP/1.2 would be served as 1.1 (RFC 9112)
        return 505, f"HTTP/{version.decode()} is not supported"
    if len(request.method) > MAX_METHOD:
        return 400, f"method over {MAX_METHOD} bytes"
    if len(request.target) > MAX_TARGET:
        return 414, f"request target over {MAX_TARGET} bytes"
    if request.method == b"CONNECT":
        return 405, "CONNECT: a WSGI server does not tunnel"
    target = request.target
    asterisk = target == b"*" and request.method == b"OPTIONS"
    if not (target.startswith(b"/") or asterisk or _ABSOLUTE_FORM.match(target)):
        # A target a front end may read otherwise: "*" (OPTIONS only), "foo/bar", "host:80".
        return 400, "the request target is not a path (origin-form) nor an http(s) URL"
    return None


def _check_headers(
    request: h11.Request, head: bytes | bytearray, server: ServerInfo
) -> tuple[int, str] | None:
    headers = request.headers.raw_items()
    if len(headers) > MAX_HEADERS:
        return 431, f"more than {MAX_HEADERS} header lines"
    size = len(request.target) + sum(len(name) + len(value) + 4 for name, value in headers)
    if size > MAX_HEAD:
        return 431, f"request head over {MAX_HEAD} bytes"
    end = _head_end(head)
    if _BARE_LF.search(head, 0, end + 2):  # up to the empty line's own line break
        return 400, "a line of the request head that ends with LF alone, not CRLF"
    if _OBSOLETE_FOLD.search(head, 0, end):
        return 400, "obsolete line folding in a header (a header line starting with a space)"
    if _CONTROL.search(b"".join(value for _, value in headers)):
        return 400, "a control character in a header value"
    names = [name for name, _ in request.headers]  # lower-cased by h11
    hosts = [value for name, value in request.headers if name == b"host"]
    if len(hosts) > 1:
        return 400, "more than one Host header"
    if hosts and not _HOST.fullmatch(hosts[0]):
        return 400, "an invalid Host header"
    # From the raw head: h11 folds "Content-Length: 5, 5" and a repeated equal one into one.
    for name in (b"content-length", b"content-type"):
        given = _HEADER_VALUES[name].findall(head, 0, end)
        if len(given) > 1 or (name == b"content-length" and given and b"," in given[0]):
            return 400, f"{name.decode().title()} given more than once"
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            return 400, "both Content-Length and Transfer-Encoding (a request smuggling vector)"
        if request.http_version == b"1.0":
            return 400, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112: faulty framing)"
    length = _content_length(request)
    if length is not None and length > server.max_body:
        return 413, f"request body of {length} bytes, over the limit of {server.max_body}"
    return None


def _plain_headers(body: bytes, close: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
    ]
    return [*headers, (b"Connection", b"close")] if close else headers


MAX_METHOD = 32  # bytes of method name
_EMPTY_LINES = re.compile(rb"(?:\r\n)*")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_VALUES = {
    name: re.compile(rb"\n%s[ \t]*:([^\r\n]*)" % name, re.IGNORECASE)
    for name in (b"content-length", b"content-type")
}
_ABSOLUTE_FORM = re.compile(rb"https?://", re.IGNORECASE)
_OBSOLETE_FOLD = re.compile(rb"\n[ \t]")
_HEAD_END = re.compile(rb"\n\r?\n")  # as h11 reads it: a line ends with LF, CR optional
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is fine
# RFC 3986's host (a name, IPv4, or an [IPv6] literal) with an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def _head_end(head: bytes | bytearray) -> int:
    """Where the head ends in ``head`` (the first empty line), or its length."""
    match = _HEAD_END.search(head)
    return match.start() if match else len(head)


def _is_chunked(event: Any) -> bool:
    return isinstance(event, h11.Request) and any(
        name == b"transfer-encoding" and value.lower() == b"chunked"
        for name, value in event.headers
    )


MAX_CHUNK_LINE = 4096  # bytes of a chunk-size line with its extensions
MAX_TRAILERS = 16384  # bytes of a chunked body's trailer section
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9112 7.1: chunk-size [ chunk-ext ], chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )
_CHUNK_LINE = re.compile(
    rb"[0-9A-Fa-f]+(?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*" % (_TOKEN, _TOKEN, _QUOTED)
)
_TRAILER_LINE = re.compile(rb"(%s):[ \t]*[\t\x20-\x7e\x80-\xff]*" % _TOKEN)
# What a trailer must not carry (RFC 9110 6.5.1): framing, routing, and what a server
# acts on before it reads a body.
_FORBIDDEN_TRAILERS = frozenset(
    b"content-length transfer-encoding host content-type content-encoding content-range "
    b"trailer te connection upgrade expect authorization cookie".split()
)


class ChunkedBody:
    """Checks the framing of a chunked request body as its bytes arrive, to the letter of
    RFC 9112 (h11 decodes it, leniently): CRLF line ends, chunk extensions well formed and
    bounded, no forbidden trailer field. ``check(data)`` gives (status, reason) on the
    first fault; bytes after the body's end are not looked at."""

    def __init__(self) -> None:
        self._line = bytearray()  # a size or trailer line under way
        self._data_left = 0  # bytes of chunk data still to skip
        self._state = "size"  # size, data, data-end, trailers, done
        self._trailers = 0

    def check(self, data: bytes) -> tuple[int, str] | None:
        at = 0
        while at < len(data) and self._state != "done":
            if self._state == "data":
                taken = min(self._data_left, len(data) - at)
                self._data_left -= taken
                at += taken
                if not self._data_left:
                    self._state = "data-end"
                continue
            # A line: a chunk's size, the end of its data, or a trailer.
            end = data.find(b"\n", at)
            upto = len(data) if end < 0 else end + 1
            self._line += data[at:upto]
            at = upto
            problem = None
            if len(self._line) > MAX_CHUNK_LINE + 2:  # its CRLF apart
                problem = f"a chunk line over {MAX_CHUNK_LINE} bytes"
            elif end >= 0:
                problem = self._line_done()
                self._line = bytearray()
            if problem is not None:
                return 400, f"malformed chunked body: {problem}"
        return None

    def _line_done(self) -> str | None:
        line = bytes(self._line)
        if not line.endswith(b"\r\n"):
            return "a line that ends with LF alone"
        line = line[:-2]
        if self._state == "size":
            if not _CHUNK_LINE.fullmatch(line):
                return f"a bad chunk-size line {line[:40]!r}"
            size = int(line.split(b";")[0].strip(b" \t"), 16)
            self._state, self._data_left = ("data", size) if size else ("trailers", 0)
            return None
        if self._state == "data-end":
            if line:
                return "chunk data longer than its size"
            self._state = "size"
            return None
        # trailers
        if not line:
            self._state = "done"
            return None
        self._trailers += len(line) + 2
        match = _TRAILER_LINE.fullmatch(line)
        if match is None:
            return f"a bad trailer line {line[:40]!r}"
        if match.group(1).lower() in _FORBIDDEN_TRAILERS:
            return f"a {match.group(1).decode()} trailer field"
        if self._trailers > MAX_TRAILERS:
            return f"trailers over {MAX_TRAILERS} bytes"
        return None


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 checked it is digits, and one value
    return None


def _diagnose(error: h11.RemoteProtocolError, head: bytes | bytearray) -> tuple[int, str]:
    """The status for h11's rejection: an overlong request line is a 414, and framing
    errors h11 calls 501 (an unknown transfer coding) are the client's: 400."""
    status = error.error_status_hint
    if status == 431 and b"\n" not in head:
        return 414, f"request line over {MAX_HEAD} bytes"
    if status == 501:
        status = 400
    return status, str(error)


_NO_INPUT = io.BytesIO(b"")  # wsgi.input once the request is over


class RequestBody(io.RawIOBase):
    """``wsgi.input``: the request body as h11 decodes it (chunked or not). It ends where
    the body ends, so ``wsgi.input_terminated`` is set and reading to the end is safe."""

    def __init__(self, connection: HTTPConnection) -> None:
        self.connection = connection
        self._pending = b""
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending and not self._ended:
            self._pending = self.connection.read_body(len(buffer))
            self._ended = not self._pending
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _environ(connection: HTTPConnection, request: h11.Request) -> WSGIEnvironment:
    path, _, query = _origin_form(request.target).partition(b"?")
    server = connection.server
    client = connection.client if isinstance(connection.client, tuple) else ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "REQUEST_URI": request.target.decode("latin-1"),
        "RAW_URI": request.target.decode("latin-1"),
        "SERVER_NAME": server.host,
        "SERVER_PORT": str(server.port),
        "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("latin-1"),
        "SERVER_SOFTWARE": SERVER_HEADER.decode(),
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BufferedReader(RequestBody(connection)),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": not server.multiprocess,
        "wsgi.multiprocess": server.multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    for raw_name, value in request.headers.raw_items():
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue  # X_Forwarded_For would pass for X-Forwarded-For: never trusted
        key = name.replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        if key in environ:
            text = environ[key] + ("; " if key == "HTTP_COOKIE" else ", ") + text
        environ[key] = text
    return environ


def _origin_form(target: bytes) -> bytes:
    """``/a/b?x=1`` from ``http://host/a/b?x=1`` (the absolute form a proxy sends)."""
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return target
    ends = [index for index in (rest.find(b"/"), rest.find(b"?")) if index >= 0]
    path = rest[min(ends) :] if ends else b""
    return path if path.startswith(b"/") else b"/" + path


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
