"""Raw HTTP exchanges with a devserve process: send bytes on a new connection, read what
comes back until the server closes it, and check every response is well formed. Shared by
the request corpus (``test_corpus.py``) and the hostile-client tests."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket

from tests.integration.harness import DevserveProcess

TIMEOUT = 5.0  # every socket read of a raw exchange


@dataclasses.dataclass
class Reply:
    data: bytes  # everything the server sent
    end: str  # how the exchange ended: "eof" (a FIN), "reset" or "timeout" (still open)


def exchange(
    server: DevserveProcess, raw: bytes, *, shut_wr: bool = False, timeout: float = TIMEOUT
) -> Reply:
    """Send ``raw`` on a new connection (then half-close, with ``shut_wr``) and read until
    the server closes it."""
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused mid-way
            sock.sendall(raw)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        return read_to_end(sock)


def read_to_end(sock: socket.socket) -> Reply:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # after the answer: the server closed with unread input
            return Reply(data, "reset")
        except TimeoutError:
            return Reply(data, "timeout")
        if not chunk:
            return Reply(data, "eof")
        data += chunk


@dataclasses.dataclass
class Parsed:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e]*")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([\x20-\x7e]*)")


def parse_responses(data: bytes) -> list[Parsed]:
    """Every response in ``data``; an AssertionError unless each is well-formed (a status
    line, valid header lines, a Content-Length body) and nothing else is left."""
    responses = []
    while data:
        end = data.find(b"\r\n\r\n")
        assert end >= 0, f"incomplete response head: {data[:300]!r}"
        status_line, *lines = data[:end].split(b"\r\n")
        status = _STATUS_LINE.fullmatch(status_line)
        assert status is not None, f"malformed status line: {status_line!r}"
        headers: dict[str, str] = {}
        for line in lines:
            header = _HEADER_LINE.fullmatch(line)
            assert header is not None, f"malformed header line: {line!r}"
            name = header[1].decode().lower()
            assert name not in headers, f"{name} repeated in {data[:end]!r}"
            headers[name] = header[2].decode()
        code = int(status[1])
        rest = data[end + 4 :]
        length = 0
        if code >= 200 and code not in (204, 304):
            assert headers.get("content-length", "").isdigit(), f"no Content-Length: {headers}"
            length = int(headers["content-length"])
            assert len(rest) >= length, f"body shorter than its Content-Length: {rest!r}"
        responses.append(Parsed(code, headers, rest[:length]))
        data = rest[length:]
    return responses


@dataclasses.dataclass(frozen=True)
class Seen:
    entered: int  # requests that reached the app
    completed: int  # those whose body the app read to its end
    text: str  # one line per request: "METHOD PATH LENGTH" ("-": body not read to its end)


def seen(server: DevserveProcess) -> Seen:
    response = server.request("/seen")
    assert response.status == 200, response.text
    headers = response.headers
    return Seen(int(headers["X-Entered"]), int(headers["X-Completed"]), response.text)


def log_tail(server: DevserveProcess, offset: int) -> str:
    return server.log[offset:][-3000:]


def http(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """Raw request bytes, CRLF line ends: ``http(b"GET / HTTP/1.1", b"Host: x")``."""
    return b"\r\n".join([line, *headers, b"", b""]) + body


def post(*headers: bytes, body: bytes = b"", target: bytes = b"/echo") -> bytes:
    return http(b"POST " + target + b" HTTP/1.1", b"Host: x", *headers, body=body)


def get_with(*headers: bytes) -> bytes:
    return http(b"GET / HTTP/1.1", *headers)


CHUNKED = b"Transfer-Encoding: chunked"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
