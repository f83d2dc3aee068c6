"""One request's trip through the WSGI app (PEP 3333): the environ in (with ``wsgi.input``
reading the body as h11 decodes it), the status, headers and body out, validated (no
response splitting) and framed by devserve (h11 only parses requests: its writer validates
every header again, which cost a third of a small request's time)."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import h11

from devserve._engine.checks import CONTROL, FRAMING
from devserve._engine.wire import (
    SERVER_HEADER,
    ClientGone,
    http_date,
    log_bad_request,
    response_head,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from devserve._engine.connection import HTTPConnection

__all__ = ["Exchange", "InvalidResponse", "RequestBody", "environ_of"]

_logger = logging.getLogger("devserve.servers")


class InvalidResponse(Exception):
    """The app's response breaks HTTP (a bad header, more bytes than its Content-Length)."""


class Exchange:
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
        environ = environ_of(self.connection, self.request)
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
        except ClientGone as gone:
            if gone.status:  # a malformed body, not a vanished client
                log_bad_request(self.connection.client_host, gone.status, str(gone))
                self._fail(gone.status, f"Bad request body: {gone}\n".encode())
        except InvalidResponse as error:
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
            raise InvalidResponse(f"status {status!r} is not a code of 100-599 and a reason")
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
                raise InvalidResponse(f"more body than its Content-Length of {self.length} bytes")
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
            raise InvalidResponse(
                f"{self.sent} bytes of body for a Content-Length of {self.length}"
            )

    def _set_length(self, body: list[bytes] | tuple[bytes, ...]) -> None:
        """A body given whole gets a Content-Length, saving chunked encoding."""
        if self.status_code in (204, 304) or self.status_code < 200:
            return  # no body, and no Content-Length either
        if not any(name.lower() in FRAMING for name, _ in self.headers):
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
                    raise InvalidResponse(f"Content-Length {value!r} is not a number")
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
        return response_head(self.status_code, self.reason, headers)

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
            and b"close" not in connection_options(request.headers)
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
        raise InvalidResponse("a header name that is not a token")
    if CONTROL.search(b"".join(value for _, value in headers)):
        raise InvalidResponse("a header value with a control character (a line break...)")


def connection_options(headers: Any) -> bytes:
    return b",".join(value for name, value in headers if name == b"connection").lower()


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


def environ_of(connection: HTTPConnection, request: h11.Request) -> WSGIEnvironment:
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
        "devserve.peer": client[0],  # the socket's peer: --proxy-mode rewrites REMOTE_ADDR
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
