"""The request checks devserve applies on top of h11's parsing, the same in every mode:
what h11 lets through but a careful server refuses (a request smuggling vector, a header a
front end may read otherwise), and the chunked-body framing checked to the letter."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import h11

if TYPE_CHECKING:
    from devserve._engine.wire import ServerInfo

MAX_HEAD = 65536  # bytes of request line and headers: above it, 431
MAX_TARGET = 8192  # bytes of request target: above it, 414

FRAMING = (b"content-length", b"transfer-encoding")
MAX_HEADERS = 100  # header lines in a request: above it, 431


def check(
    request: h11.Request, head: bytes | bytearray, server: ServerInfo
) -> tuple[int, str] | None:
    """What h11 lets through but a careful server refuses: (status, reason), or None.
    ``head`` holds the raw bytes received for it (and maybe more)."""
    return check_request_line(request) or check_headers(request, head, server)


def check_request_line(request: h11.Request) -> tuple[int, str] | None:
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
    if not (target.startswith(b"/") or asterisk or ABSOLUTE_FORM.match(target)):
        # A target a front end may read otherwise: "*" (OPTIONS only), "foo/bar", "host:80".
        return 400, "the request target is not a path (origin-form) nor an http(s) URL"
    return None


def check_headers(
    request: h11.Request, head: bytes | bytearray, server: ServerInfo
) -> tuple[int, str] | None:
    headers = request.headers.raw_items()
    if len(headers) > MAX_HEADERS:
        return 431, f"more than {MAX_HEADERS} header lines"
    size = len(request.target) + sum(len(name) + len(value) + 4 for name, value in headers)
    if size > MAX_HEAD:
        return 431, f"request head over {MAX_HEAD} bytes"
    end = head_end(head)
    if BARE_LF.search(head, 0, end + 2):  # up to the empty line's own line break
        return 400, "a line of the request head that ends with LF alone, not CRLF"
    if OBSOLETE_FOLD.search(head, 0, end):
        return 400, "obsolete line folding in a header (a header line starting with a space)"
    if CONTROL.search(b"".join(value for _, value in headers)):
        return 400, "a control character in a header value"
    names = [name for name, _ in request.headers]  # lower-cased by h11
    hosts = [value for name, value in request.headers if name == b"host"]
    if len(hosts) > 1:
        return 400, "more than one Host header"
    if hosts and not HOST.fullmatch(hosts[0]):
        return 400, "an invalid Host header"
    # From the raw head: h11 folds "Content-Length: 5, 5" and a repeated equal one into one.
    for name in (b"content-length", b"content-type"):
        given = HEADER_VALUES[name].findall(head, 0, end)
        if len(given) > 1 or (name == b"content-length" and given and b"," in given[0]):
            return 400, f"{name.decode().title()} given more than once"
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            return 400, "both Content-Length and Transfer-Encoding (a request smuggling vector)"
        if request.http_version == b"1.0":
            return 400, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112: faulty framing)"
    length = content_length(request)
    if length is not None and length > server.max_body:
        return 413, f"request body of {length} bytes, over the limit of {server.max_body}"
    return None


MAX_METHOD = 32  # bytes of method name
EMPTY_LINES = re.compile(rb"(?:\r\n)*")
BARE_LF = re.compile(rb"(?<!\r)\n")
HEADER_VALUES = {
    name: re.compile(rb"\n%s[ \t]*:([^\r\n]*)" % name, re.IGNORECASE)
    for name in (b"content-length", b"content-type")
}
ABSOLUTE_FORM = re.compile(rb"https?://", re.IGNORECASE)
OBSOLETE_FOLD = re.compile(rb"\n[ \t]")
HEAD_END = re.compile(rb"\n\r?\n")  # as h11 reads it: a line ends with LF, CR optional
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # tab is fine
# RFC 3986's host (a name, IPv4, or an [IPv6] literal) with an optional port.
HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")


def head_end(head: bytes | bytearray) -> int:
    """Where the head ends in ``head`` (the first empty line), or its length."""
    match = HEAD_END.search(head)
    return match.start() if match else len(head)


def is_chunked(event: Any) -> bool:
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


def content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 checked it is digits, and one value
    return None


def diagnose(error: h11.RemoteProtocolError, head: bytes | bytearray) -> tuple[int, str]:
    """The status for h11's rejection: an overlong request line is a 414, and framing
    errors h11 calls 501 (an unknown transfer coding) are the client's: 400."""
    status = error.error_status_hint
    if status == 431 and b"\n" not in head:
        return 414, f"request line over {MAX_HEAD} bytes"
    if status == 501:
        status = 400
    return status, str(error)
