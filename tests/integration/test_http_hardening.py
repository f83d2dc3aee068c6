"""Malformed, hostile and slow HTTP clients against the real CLI (threaded mode).

Every request devserve refuses gets one HTTP answer with ``Connection: close`` (or, for
input that is not HTTP, a clean close), one log line, and never reaches the app: the app
(``apps/recordapp.py``) records what it sees, and ``/seen`` tells. Nothing after a refused
request is served as a request. A corpus of raw requests, a property-based fuzz of a valid
POST, and slow clients (trickled heads and bodies) against a capped thread pool.

The corpus and the fuzz share one server process, the slow clients another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from devserve.handler import HEAD_TIMEOUT, MAX_HEAD, MAX_HEADERS, MAX_TARGET
from tests.integration.harness import APPS, DevserveProcess, start_in, wait_until

LIMIT_MIB = 1  # --limit-request-body of the corpus server
THREADS = 4  # --max-http-threads of the slow-client server
TIMEOUT = 5.0  # every socket read of a raw exchange

# --- servers: one process per module fixture ---


def _start(folder: Path, *args: str) -> DevserveProcess:
    return start_in(folder, ["-p", "0", *args, "recordapp:app"], cwd=APPS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevserveProcess]:
    """The corpus and fuzz server: bodies above 1 MiB get 413."""
    process = _start(tmp_path_factory.mktemp("hardening"), "--limit-request-body", str(LIMIT_MIB))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevserveProcess]:
    """The slow-client server: at most THREADS request threads."""
    process = _start(tmp_path_factory.mktemp("slow"), "--max-http-threads", str(THREADS))
    yield process
    process.stop()


# --- raw exchanges ---


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
        return _read_to_end(sock)


def _read_to_end(sock: socket.socket) -> Reply:
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


# --- the corpus ---


def http(line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """Raw request bytes, CRLF line ends: ``http(b"GET / HTTP/1.1", b"Host: x")``."""
    return b"\r\n".join([line, *headers, b"", b""]) + body


def post(*headers: bytes, body: bytes = b"", target: bytes = b"/echo") -> bytes:
    return http(b"POST " + target + b" HTTP/1.1", b"Host: x", *headers, body=body)


def get_with(*headers: bytes) -> bytes:
    return http(b"GET / HTTP/1.1", *headers)


CHUNKED = b"Transfer-Encoding: chunked"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
# What a TLS client sends first: a ClientHello record (its lengths not checked here).
TLS_HELLO = (
    b"\x16\x03\x01\x00\x4f\x01\x00\x00\x4b\x03\x03"
    + bytes(range(0x20, 0x40))
    + b"\x00\x00\x04\x13\x01\x13\x02\x01\x00\x00\x1e\x00\x00\x00\x0e\x00\x0c\x00\x00\x09localhost"
    + b"\x00\x0d\x00\x04\x00\x02\x04\x03\x00\x2b\x00\x03\x02\x03\x04"
)
OVER_LIMIT_CHUNK = b"%x\r\n" % ((LIMIT_MIB << 20) + 1) + b"a" * ((LIMIT_MIB << 20) + 1)


@dataclasses.dataclass(frozen=True)
class Case:
    raw: bytes
    status: tuple[int, ...]  # the answers accepted
    in_body: bool = False  # the head is valid: the app reads a malformed body (then refused)
    shut_wr: bool = False  # half-close after sending: no more bytes will come
    clean_close: bool = False  # not HTTP: closing without an answer is fine too


def case(raw: bytes, *status: int, id: str, **options: bool) -> Any:
    """A corpus entry: the raw request, the statuses accepted, an id for the report."""
    return pytest.param(Case(raw, status, **options), id=id)


_many_headers = [b"X-H%d: v" % index for index in range(MAX_HEADERS)]  # + Host: one too many
_big_headers = [b"X-Big-%d: %s" % (index, b"v" * 8000) for index in range(MAX_HEAD // 8000 + 1)]

REQUEST_LINE = [
    case(http(b"GE T / HTTP/1.1", b"Host: x"), 400, id="method-with-space"),
    case(http(b"GE\tT / HTTP/1.1", b"Host: x"), 400, id="method-with-tab"),
    case(http(b"GE\x01T / HTTP/1.1", b"Host: x"), 400, id="method-with-control-byte"),
    case(http(b"GE\x00T / HTTP/1.1", b"Host: x"), 400, id="method-with-nul"),
    case(http(b" / HTTP/1.1", b"Host: x"), 400, id="method-empty"),
    case(http(b" GET / HTTP/1.1", b"Host: x"), 400, id="request-line-leading-space"),
    case(http(b"GET  / HTTP/1.1", b"Host: x"), 400, id="request-line-double-space"),
    case(http(b"GET / HTTP/2.0", b"Host: x"), 505, id="version-2.0"),
    case(http(b"GET / HTTP/0.9", b"Host: x"), 505, id="version-0.9"),
    case(http(b"GET / HTTP/3", b"Host: x"), 400, id="version-without-minor"),
    case(http(b"GET / HTTP/1.x", b"Host: x"), 400, id="version-garbage"),
    case(http(b"GET / http/1.1", b"Host: x"), 400, id="version-lower-case"),
    case(http(b"GET / HTTP/1.1 ", b"Host: x"), 400, id="version-trailing-space"),
    case(http(b"GET /", b"Host: x"), 400, id="version-missing"),
    case(http(b"GET /a\x00b HTTP/1.1", b"Host: x"), 400, id="target-with-nul"),
    case(http(b"GET /a\x01b HTTP/1.1", b"Host: x"), 400, id="target-with-control-byte"),
    case(http(b"GET /a\x7fb HTTP/1.1", b"Host: x"), 400, id="target-with-del"),
    case(http(b"GET /a\xffb HTTP/1.1", b"Host: x"), 400, id="target-with-8bit-byte"),
    case(http(b"GET /a b HTTP/1.1", b"Host: x"), 400, id="target-with-space"),
    case(b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400, id="bare-cr-line-end"),
    case(http(b"GET /" + b"a" * MAX_TARGET + b" HTTP/1.1", b"Host: x"), 414, id="target-over-max"),
    case(b"GET /" + b"a" * (MAX_HEAD + 100), 414, id="request-line-over-max-head-unended"),
    case(
        http(b"GET /" + b"a" * (MAX_HEAD + 100) + b" HTTP/1.1", b"Host: x"),
        414,
        id="request-line-over-max-head",
    ),
    case(
        b"GET /" + b"a" * (4 * MAX_HEAD) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        id="request-line-far-over-max-head",
    ),
    case(  # the length is in the method: a bad method (400), not a long target (414)
        http(b"A" * (MAX_HEAD + 100) + b" / HTTP/1.1", b"Host: x"),
        400,
        id="request-line-over-max-head-long-method",
        shut_wr=True,
    ),
    case(http(b"A" * 33 + b" / HTTP/1.1", b"Host: x"), 400, id="method-over-32-bytes"),
]

HEADERS = [
    case(get_with(b"Host: x", b"NoColon"), 400, id="header-without-colon"),
    case(get_with(b"Host: x", b"Bad Name: v"), 400, id="header-name-with-space"),
    case(get_with(b"Host: x", b"Bad(Name): v"), 400, id="header-name-with-paren"),
    case(get_with(b"Host: x", b"Bad\x00Name: v"), 400, id="header-name-with-nul"),
    case(get_with(b"Host: x", b"X-A : v"), 400, id="space-before-colon"),
    case(get_with(b"Host: x", b"X-A\t: v"), 400, id="tab-before-colon"),
    case(get_with(b"Host: x", b"X-A: v", b" folded"), 400, id="obs-fold-space"),
    case(get_with(b"Host: x", b"X-A: v", b"\tfolded"), 400, id="obs-fold-tab"),
    case(get_with(b" Host: x"), 400, id="first-header-line-indented"),
    case(get_with(b"Host: x", b"X-A: a\x00b"), 400, id="header-value-with-nul"),
    case(get_with(b"Host: x", b"X-A: a\rb"), 400, id="header-value-with-bare-cr"),
    case(get_with(b"Host: x", *_many_headers), 431, id="headers-over-max-count"),
    case(get_with(b"Host: x", *_big_headers), 431, id="head-over-max-head"),
    case(get_with(b"Host: x", b"X-Big: " + b"v" * MAX_HEAD), 431, id="one-header-over-max-head"),
    case(get_with(b"Host: x", b"Host: y"), 400, id="two-host-headers"),
    case(http(b"GET / HTTP/1.0", b"Host: x", b"Host: x"), 400, id="two-host-headers-http-1.0"),
    case(get_with(b"Accept: */*"), 400, id="no-host-http-1.1"),
    case(
        get_with(b"Host: a b"),
        400,
        id="host-with-space",
        shut_wr=True,
    ),
]

FRAMING = [
    case(post(b"Content-Length: -1"), 400, id="content-length-negative"),
    case(post(b"Content-Length: abc"), 400, id="content-length-not-a-number"),
    case(post(b"Content-Length: 1e3"), 400, id="content-length-exponent"),
    case(post(b"Content-Length: +5", body=b"hello"), 400, id="content-length-plus-sign"),
    case(post(b"Content-Length: 0x5", body=b"hello"), 400, id="content-length-hex"),
    case(post(b"Content-Length: "), 400, id="content-length-empty"),
    case(post(b"Content-Length: 5 5", body=b"hello"), 400, id="content-length-two-numbers"),
    case(post(b"Content-Length: %d" % (LIMIT_MIB << 20 | 1)), 413, id="content-length-over-limit"),
    case(post(b"Content-Length: 1000000000000"), 413, id="content-length-huge"),
    case(
        post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
        400,
        id="content-length-twice-different",
    ),
    case(post(b"Content-Length: 5, 6", body=b"hello!"), 400, id="content-length-list"),
    case(post(b"Content-Length: 5", CHUNKED, body=b"0\r\n\r\n"), 400, id="content-length-and-te"),
    case(post(CHUNKED, b"Content-Length: 5", body=b"0\r\n\r\n"), 400, id="te-and-content-length"),
    case(post(b"Transfer-Encoding: gzip"), 400, id="te-gzip"),
    case(post(b"Transfer-Encoding: chunked, gzip"), 400, id="te-chunked-then-gzip"),
    case(post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 400, id="te-gzip-chunked"),
    case(post(b"Transfer-Encoding: xchunked"), 400, id="te-xchunked"),
    case(post(b"Transfer-Encoding: identity"), 400, id="te-identity"),
    case(post(CHUNKED, CHUNKED, body=b"0\r\n\r\n"), 400, id="te-two-headers"),
    case(
        post(CHUNKED, body=b"zz\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-not-hex", in_body=True
    ),
    case(
        post(CHUNKED, body=b"-5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-negative", in_body=True
    ),
    case(post(CHUNKED, body=b"0x5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-0x", in_body=True),
    case(post(CHUNKED, body=b"\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-empty", in_body=True),
    case(post(CHUNKED, body=b"5\r\nhelloX0\r\n\r\n"), 400, id="chunk-without-crlf", in_body=True),
    case(
        post(CHUNKED, body=b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n"),
        400,
        id="chunk-trailer-malformed",
        in_body=True,
    ),
    case(
        post(CHUNKED, body=OVER_LIMIT_CHUNK),
        413,
        id="chunked-body-over-limit-half-closed",
        in_body=True,
        shut_wr=True,
    ),
    case(
        post(b"Content-Length: 10", body=b"abc"),
        400,
        id="body-shorter-than-length-half-closed",
        in_body=True,
        shut_wr=True,
    ),
    case(
        post(CHUNKED, body=b"5\r\nhel"),
        400,
        id="chunked-body-cut-half-closed",
        in_body=True,
        shut_wr=True,
    ),
    case(
        http(b"POST /echo HTTP/1.0", CHUNKED, body=b"3\r\nabc\r\n0\r\n\r\n"),
        400,
        id="te-in-http-1.0",
    ),
]

NOT_HTTP = [
    case(TLS_HELLO, 400, id="tls-client-hello", shut_wr=True, clean_close=True),
    case(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, 505, id="http2-preface", clean_close=True),
    case(
        random.Random(8080).randbytes(1024), 400, id="random-bytes", shut_wr=True, clean_close=True
    ),
    case(bytes(range(256)), 400, id="every-byte-value", shut_wr=True, clean_close=True),
    case(b"\r\n\r\n", 400, id="lone-blank-lines", clean_close=True),
    case(b"SSH-2.0-OpenSSH_9.6\r\n", 400, id="ssh-banner", shut_wr=True, clean_close=True),
]

SMUGGLING = [
    case(
        post(b"Content-Length: %d" % (5 + len(SMUGGLED)), CHUNKED, body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="smuggle-cl-te",
    ),
    case(
        post(
            CHUNKED,
            b"Content-Length: 4",
            body=b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n",
        ),
        400,
        id="smuggle-te-cl",
    ),
    case(
        post(b"Transfer-Encoding : chunked", b"Content-Length: 5", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="smuggle-te-with-space-before-colon",
    ),
    case(
        post(b"Content-Length: 0", b"Content-Length: %d" % len(SMUGGLED), body=SMUGGLED),
        400,
        id="smuggle-two-content-lengths",
    ),
    case(get_with(b"Host: x", b"Host: y") + SMUGGLED, 400, id="smuggle-after-refused-head"),
    case(http(b"GET / HTTP/2.0", b"Host: x") + SMUGGLED, 505, id="smuggle-after-refused-version"),
    case(
        post(CHUNKED, body=b"zz\r\n\r\n" + SMUGGLED),
        400,
        id="smuggle-after-malformed-chunk",
        in_body=True,
    ),
]

CORPUS = [*REQUEST_LINE, *HEADERS, *FRAMING, *NOT_HTTP, *SMUGGLING]


@pytest.mark.parametrize("case", CORPUS)
def test_malformed_request_is_refused(server: DevserveProcess, case: Case) -> None:
    before = seen(server)
    offset = len(server.log)
    reply = exchange(server, case.raw, shut_wr=case.shut_wr)
    assert reply.end != "timeout", f"neither answered nor closed: {reply.data[:300]!r}"
    if case.clean_close and not reply.data:
        assert reply.end == "eof", "closed with a reset, not cleanly"
    else:
        responses = parse_responses(reply.data)
        assert [r.status for r in responses] == [responses[0].status], "more than one answer"
        response = responses[0]
        assert response.status in case.status, response.body
        assert response.headers.get("connection") == "close", response.headers
        if case.in_body:  # the app had it: its access line has the status
            logged = rf'"POST /echo HTTP/1\.1" {response.status} '
        else:
            logged = rf"devserve\.access: \S+ bad request \({response.status}\): "
        server.wait_for_log(logged, timeout=5, after=offset)
    after = seen(server)
    assert "/smuggled" not in after.text, after.text
    if case.in_body:  # it reached the app, which never got a whole body
        assert (after.entered, after.completed) == (before.entered + 1, before.completed)
        assert after.text.endswith(" -\n"), after.text[-300:]
    else:
        assert after.entered == before.entered, after.text[-300:]
    assert server.request("/").status == 200, log_tail(server, offset)


def test_request_after_a_refused_pipelined_one_is_not_served(server: DevserveProcess) -> None:
    before = seen(server)
    raw = (
        http(b"GET /first HTTP/1.1", b"Host: x")
        + http(b"GET /second HTTP/1.1", b"Host: x", b"Content-Length: 1e3")
        + SMUGGLED
    )
    reply = exchange(server, raw)
    assert reply.end != "timeout"
    responses = parse_responses(reply.data)
    assert [r.status for r in responses] == [200, 400]
    assert responses[1].headers["connection"] == "close"
    after = seen(server)
    assert after.entered == before.entered + 1
    assert after.text.endswith("GET /first 0\n"), after.text[-300:]


def test_valid_requests_on_the_raw_path_are_served(server: DevserveProcess) -> None:
    """The corpus's near misses: what devserve must keep accepting."""
    before = seen(server)
    accepted = [
        post(b"Content-Length: 5", b"Connection: close", body=b"hello"),
        post(b"Content-Length: 5", b"Content-Length: 5", b"Connection: close", body=b"hello"),
        post(b"Transfer-Encoding: Chunked", b"Connection: close", body=b"5\r\nhello\r\n0\r\n\r\n"),
        post(CHUNKED, b"Connection: close", body=b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
        http(b"POST /echo HTTP/1.0", b"Content-Length: 5", body=b"hello"),
        get_with(b"Host: x", b"Connection: close", *_many_headers[:-2]),
        http(b"GET /" + b"a" * (MAX_TARGET - 1) + b" HTTP/1.1", b"Host: x", b"Connection: close"),
    ]
    for raw in accepted:
        reply = exchange(server, raw)
        assert reply.end == "eof", raw[:100]
        [response] = parse_responses(reply.data)
        assert response.status == 200, (raw[:100], response.body)
    assert seen(server).completed == before.completed + len(accepted)


# --- beyond the corpus ---


def test_lf_line_ends_and_a_body_with_leading_space(server: DevserveProcess) -> None:
    raw = b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 6\nConnection: close\n\r\nab\n cd"
    [response] = parse_responses(exchange(server, raw).data)
    assert (response.status, response.body) == (200, b"ab\n cd")


def test_connect_is_not_a_server_error(server: DevserveProcess) -> None:
    reply = exchange(server, http(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443"))
    [response] = parse_responses(reply.data)
    assert response.status < 500, response.body


def test_malformed_body_is_logged_with_its_reason(server: DevserveProcess) -> None:
    offset = len(server.log)
    reply = exchange(server, post(CHUNKED, body=b"zz\r\nhello\r\n0\r\n\r\n"))
    assert parse_responses(reply.data)[0].status == 400
    server.wait_for_log(r"bad request \(400\): .*chunk", timeout=2, after=offset)


def test_body_over_the_limit_closes_at_once(server: DevserveProcess) -> None:
    reply = exchange(server, post(CHUNKED, body=OVER_LIMIT_CHUNK), timeout=3)
    [response] = parse_responses(reply.data)
    assert response.status == 413
    assert reply.end != "timeout", "the connection stayed open after the 413"


# --- fuzz ---

VALID_POSTS = (
    post(b"Content-Type: text/plain", b"Content-Length: 11", body=b"hello world"),
    post(CHUNKED, body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
)
FRAGMENTS = (
    b"\x00",
    b"\x01",
    b"\x7f",
    b"\xff",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"-",
    b"0",
    b"9",
    b"f",
    b"/",
    b"?",
    b"%00",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"chunked",
    b"Host: y\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 99999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
)
EDITS = st.lists(
    st.tuples(
        st.sampled_from(("insert", "delete", "replace")),
        st.integers(min_value=0, max_value=1 << 16),
        st.one_of(st.sampled_from(FRAGMENTS), st.binary(min_size=1, max_size=4)),
    ),
    min_size=1,
    max_size=4,
)


def mutate(base: bytes, edits: list[tuple[str, int, bytes]]) -> bytes:
    """Insert, delete (as many bytes as the fragment has) or overwrite at positions taken
    modulo the current length."""
    data = bytearray(base)
    for kind, where, fragment in edits:
        at = where % (len(data) + 1)
        if kind == "insert":
            data[at:at] = fragment
        elif kind == "delete":
            del data[at : at + len(fragment)]
        else:
            data[at : at + len(fragment)] = fragment
    return bytes(data)


@settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis folder in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)
@given(base=st.sampled_from(VALID_POSTS), edits=EDITS)
def test_fuzzed_requests_never_break_the_server(
    server: DevserveProcess, base: bytes, edits: list[tuple[str, int, bytes]]
) -> None:
    raw = mutate(base, edits)
    assume(not raw.startswith(b"HEAD "))  # answered without a body: not parsed here
    before = seen(server).entered
    reply = exchange(server, raw, shut_wr=True)  # half-closed: incomplete input ends at once
    assert reply.end != "timeout", f"neither answered nor closed: {reply.data[:300]!r}"
    if not reply.data:
        assert reply.end == "eof", "reset without an answer"
    responses = parse_responses(reply.data)
    for index, response in enumerate(responses):
        if response.status >= 500 and response.status != 505:  # 505: an unknown version
            assert response.status == 500, response.body
            assert seen(server).entered > before, f"500 without the app: {response.body!r}"
        if response.status >= 400:  # a refusal: the last answer, and the connection closes
            assert index == len(responses) - 1, [r.status for r in responses]
            assert response.headers.get("connection") == "close", response.headers
    assert server.popen.poll() is None, "devserve died"
    assert server.request("/", timeout=TIMEOUT).status == 200


# --- slow clients ---


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """A few more bytes of an endless header line on each socket every 0.5 s, until the
    server answers or closes it."""
    pending = {sock.fileno(): sock for sock in socks}
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending and not stop.wait(0.5):
        for fd, _ in poller.poll(0):
            poller.unregister(fd)
            del pending[fd]
        for fd, sock in list(pending.items()):
            try:
                sock.send(b"ab")
            except OSError:
                poller.unregister(fd)
                del pending[fd]


def _answered(socks: list[socket.socket]) -> list[int]:
    """The descriptors of the sockets with something to read (an answer, or the end)."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    return [fd for fd, _ in poller.poll(0)]


LOOP_408 = r"devserve\.access: \S+ (?:bad request \(408\)|request head not received .*: 408)"


def test_trickling_request_heads_hold_no_thread(capped_server: DevserveProcess) -> None:
    server = capped_server
    offset = len(server.log)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.create_connection((server.host, server.port), timeout=5))
            for _ in range(200)
        ]
        began = time.monotonic()
        for index, sock in enumerate(socks):
            sock.sendall(b"GET /trickle/%d HTTP/1.1\r\nHost: x\r\nX-Slow: " % index)
        trickler = threading.Thread(target=_trickle, args=(socks, stop), name="trickler")
        trickler.start()
        stack.callback(trickler.join, 10)
        stack.callback(stop.set)  # runs first: the stack unwinds in reverse

        durations = []
        for _ in range(10):  # spread over a few seconds of trickling
            started = time.monotonic()
            assert server.request("/", timeout=5).status == 200
            durations.append(time.monotonic() - started)
            time.sleep(0.25)
        assert max(durations) < 1.0, durations
        assert not _answered(socks), "a trickling head was answered before HEAD_TIMEOUT"

        wait_until(
            lambda: len(_answered(socks)) == len(socks),
            HEAD_TIMEOUT + 5 - (time.monotonic() - began),
            "every trickling connection to be answered or closed",
        )
        assert time.monotonic() - began >= HEAD_TIMEOUT - 0.5
        stop.set()
        timed_out = 0
        for sock in socks:
            reply = _read_to_end(sock)
            assert reply.end != "timeout"
            if reply.data:
                [response] = parse_responses(reply.data)
                assert response.status == 408, response.body
                assert response.headers.get("connection") == "close"
                timed_out += 1
        assert timed_out >= len(socks) * 0.9, f"only {timed_out} answered 408"
    wait_until(
        lambda: len(re.findall(LOOP_408, server.log[offset:])) >= len(socks),
        5,
        "a 408 log line per trickling connection",
    )
    assert seen(server).text.count("/trickle") == 0


def test_trickling_body_holds_one_thread(capped_server: DevserveProcess) -> None:
    server = capped_server
    before = seen(server)
    offset = len(server.log)
    with socket.create_connection((server.host, server.port), timeout=5) as slow:
        slow.sendall(post(b"Content-Length: 100", body=b"0123456789"))
        wait_until(lambda: seen(server).entered > before.entered, 5, "the app to read the body")
        for _ in range(10):  # one thread waits for the body; the others serve
            started = time.monotonic()
            assert server.request("/", timeout=5).status == 200
            assert time.monotonic() - started < 1.0
        still = seen(server)
        assert still.text.splitlines()[before.entered] == "POST /echo -", still.text
        assert not _answered([slow]), "the stalled body was answered"
    # Closed by the client: the body ended short, the thread comes back.
    server.wait_for_log(r'"POST /echo HTTP/1\.1" 400 ', timeout=5, after=offset)
    after = seen(server)
    assert after.completed == still.completed
    assert after.text.splitlines()[before.entered] == "POST /echo -"


def test_pipelined_partial_head_holds_no_thread(capped_server: DevserveProcess) -> None:
    server = capped_server
    with contextlib.ExitStack() as stack:
        for _ in range(THREADS):
            sock = stack.enter_context(
                socket.create_connection((server.host, server.port), timeout=5)
            )
            sock.sendall(http(b"GET /first HTTP/1.1", b"Host: x") + b"G")
            answer = b""
            while not answer.endswith(b"\r\n\r\nok"):
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
        try:
            started = time.monotonic()
            assert server.request("/", timeout=2).status == 200
            assert time.monotonic() - started < 1.0
        finally:
            stack.close()  # the threads see the end of their connections
            wait_until(lambda: server.request("/").status == 200, 15, "the server to recover")


def test_request_head_timeout_is_logged_as_a_bad_request(capped_server: DevserveProcess) -> None:
    server = capped_server
    if not re.search(LOOP_408, server.log):  # run alone: make one (else reuse those above)
        with socket.create_connection((server.host, server.port), timeout=HEAD_TIMEOUT + 5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            assert _read_to_end(s).data.startswith(b"HTTP/1.1 408 ")
        server.wait_for_log(LOOP_408, timeout=5)
    assert re.search(r"devserve\.access: \S+ bad request \(408\): ", server.log)
