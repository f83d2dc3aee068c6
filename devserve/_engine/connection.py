"""One HTTP/1.1 connection served to a WSGI app (PEP 3333), on the h11 protocol engine, the
same in every mode (threaded, prefork workers, gevent).

devserve speaks HTTP through h11 rather than Werkzeug's development request handler: h11
is strict (it rejects malformed framing that ``http.server`` lets through), supports
keep-alive, and imports in a fraction of the time ``werkzeug.serving`` takes (``http.server``,
``email``, ``ssl``...). A phoenix reload imports it again, so that time is reload latency.
Werkzeug still provides the debugger, routing and request objects, imported by what uses them.
The request checks are in :mod:`devserve._engine.checks`, the trip through the app in
:mod:`devserve._engine.response`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11

from devserve._engine import devroutes
from devserve._engine.checks import (
    EMPTY_LINES,
    HEAD_END,
    MAX_HEAD,
    ChunkedBody,
    check,
    content_length,
    diagnose,
    is_chunked,
)
from devserve._engine.response import Exchange
from devserve._engine.wire import (
    BODY_TIMEOUT,
    CONTINUE_WAIT,
    DISCARD_LIMIT,
    HEAD_TIMEOUT,
    MIN_BODY_RATE,
    RATE_WINDOW,
    READ_SIZE,
    ClientGone,
    RequestInfo,
    ServerInfo,
    error_response,
    log_bad_request,
)

if TYPE_CHECKING:
    import socket

    from _typeshed.wsgi import WSGIApplication

__all__ = ["HTTPConnection"]

_access_logger = logging.getLogger("devserve.access")


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
        head_end = HEAD_END.search(self._head)
        received = len(self._head) - head_end.end() if head_end else 0
        return max(0, self._body_length - received)

    def _loop_body_length(self, limit: int) -> int:
        request = self._read_ahead
        if not isinstance(request, h11.Request) or self.h11.they_are_waiting_for_100_continue:
            return 0
        length = content_length(request)
        if not length or length > limit or check(request, self._head, self.server):
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
            if self._to_loop(event):
                return False  # the control loop has the connection now
            if not self._respond(event) or not self._finish_cycle():
                # A body the client is still sending: the closer lingers (close_connection).
                self.unread = self.h11.their_state is h11.SEND_BODY
                return False
            if not self._head or not self.feed(b""):
                # Idle, or the start of a pipelined head: the caller waits for the rest
                # without a thread (see ``received``).
                return True

    def claimed_by_loop(self) -> str | None:
        """When the whole head of a request the control loop answers itself is in (and
        passes the checks): its target. The loop that read it serves it with no thread."""
        request = self._read_ahead
        if not isinstance(request, h11.Request):
            return None
        target = self._own_target(request)
        return None if target is None or check(request, self._head, self.server) else target

    def _to_loop(self, request: h11.Request) -> bool:
        """A request devserve answers itself (``/__devserve__/``, from this machine): the
        connection goes to the control loop, which holds it without a thread."""
        target = self._own_target(request)
        if target is None or self.server.to_loop is None:
            return False
        self.server.to_loop(self.sock.detach(), target)
        return True

    def _own_target(self, request: h11.Request) -> str | None:
        """The target of a request the control loop answers (see :func:`devroutes.claims`),
        when there is a loop to hand it to."""
        if self.server.to_loop is None:
            return None
        target = request.target.decode("latin-1")
        method = request.method.decode("latin-1")
        paths, headers = self.server.own_paths, request.headers.raw_items()
        if not devroutes.claims(method, target, self.client_host, paths, headers):
            return None
        return target

    # --- receiving ---

    def _next_event(self) -> Any:
        """The next h11 event; a malformed request is answered here (and gives None)."""
        try:
            event = self._read_head()
            problem = (
                check(event, self._head, self.server) if isinstance(event, h11.Request) else None
            )
            if problem is None and is_chunked(event):
                # What came with the head: the start of the body (maybe all of it).
                self._chunks = ChunkedBody()
                head_end = HEAD_END.search(self._head)
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
            self._reject(*diagnose(error, self._head))
        except TimeoutError:
            self._reject(408, f"the request head took over {HEAD_TIMEOUT:g}s")
        except (OSError, ClientGone):
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
        start = EMPTY_LINES.match(self._head).end()  # type: ignore[union-attr]
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
                raise ClientGone(str(error), error.error_status_hint) from None
            if event is h11.NEED_DATA:
                began = time.monotonic()
                try:
                    data = self._recv()
                except TimeoutError:
                    raise ClientGone(f"the body stalled for {BODY_TIMEOUT:g}s", 408) from None
                except OSError as error:
                    raise ClientGone(str(error)) from error
                self._body_waited += time.monotonic() - began
                if self._body_waited > RATE_WINDOW and self._body_read < (
                    MIN_BODY_RATE * self._body_waited
                ):  # a body trickled to hold a thread: never sends enough to stall
                    raise ClientGone(f"the body came slower than {MIN_BODY_RATE} bytes/s", 408)
                if self._chunks is not None and (problem := self._chunks.check(data)):
                    raise ClientGone(problem[1], problem[0])
                self.h11.receive_data(data)
            elif isinstance(event, h11.Data):
                self._body_read += len(event.data)
                if self._body_read > self.server.max_body:
                    raise ClientGone(f"request body over {self.server.max_body} bytes", 413)
                return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b""
            else:  # ConnectionClosed: the body is shorter than announced
                raise ClientGone("the body ended before its announced length", 400)

    # --- responding ---

    def _respond(self, request: h11.Request) -> bool:
        started = time.monotonic()
        method = request.method.decode("latin-1")
        target = request.target.decode("latin-1")
        self.on_request(RequestInfo(method, target, self.client_host, started))
        response = Exchange(self, request)
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
        except (h11.ProtocolError, ClientGone, OSError):
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
            raise ClientGone(str(error)) from error

    def send_error(self, status: int, body: bytes, close: bool = True) -> None:
        """A plain-text error response; unless told otherwise, the connection closes."""
        self._responding = True
        with contextlib.suppress(OSError):
            self.sock.sendall(error_response(status, body, close))
