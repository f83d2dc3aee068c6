"""One connection served to a WSGI app by devserve._engine's HTTPConnection, over a real
loopback TCP socket pair: the test writes raw request bytes on the client end and reads the response
with h11 as a client."""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import h11
import pytest

from devserve._engine import checks, connection
from devserve._engine.connection import HTTPConnection
from devserve._engine.wire import RequestInfo, ServerInfo, http_date
from devserve._version import __version__

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SERVER = ServerInfo("devserve.test", 8123)
TIMEOUT = 5.0  # every read on both ends, and every join
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))


def http(line: str, *headers: str, body: bytes = b"") -> bytes:
    """Raw request bytes: ``http("GET / HTTP/1.1", "Host: test")``."""
    return "\r\n".join([line, *headers, "", ""]).encode("latin-1") + body


@dataclasses.dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]  # names in lower case, as h11 gives them
    body: bytes
    interim: list[int]  # 1xx statuses before the final one

    def header(self, name: str) -> str | None:
        values = [value.decode("latin-1") for key, value in self.headers if key == name.encode()]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


class Peer:
    """Both ends of one loopback TCP connection: ``server`` is served by the handler,
    ``client`` is the test's, read by an h11 client."""

    def __init__(self, client: socket.socket, server: socket.socket, address: Any) -> None:
        self.client = client
        self.server = server
        self.address = address  # the client's, as accept() gives it
        self.parser = h11.Connection(h11.CLIENT)

    def serve(
        self, app: WSGIApplication, on_request: Callable[[RequestInfo | None], None] | None = None
    ) -> bool:
        if on_request is None:
            return HTTPConnection(self.server, self.address, app, SERVER).serve()
        return HTTPConnection(self.server, self.address, app, SERVER, on_request).serve()

    def exchange(self, app: WSGIApplication, data: bytes, **kwargs: Any) -> bool:
        """Send everything, serve it in this thread, then hang up on the server side (as
        the server does once serve() returns): the client reads what was answered."""
        self.client.sendall(data)
        self.client.shutdown(socket.SHUT_WR)
        kept = self.serve(app, **kwargs)
        self.hang_up()
        return kept

    def hang_up(self) -> None:
        self.server.shutdown(socket.SHUT_WR)

    def announce(self, method: str) -> None:
        """Tell the parser which request the next response answers (HEAD has no body)."""
        if self.parser.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
            self.parser.start_next_cycle()
        self.parser.send(h11.Request(method=method, target="/", headers=[("Host", "test")]))
        self.parser.send(h11.EndOfMessage())

    def _event(self, responded: bool) -> Any:
        while True:
            event = self.parser.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = self.client.recv(65536)
            assert data or responded, "the connection closed without a response"
            self.parser.receive_data(data)

    def interim(self, method: str) -> int:
        """The status of an interim (1xx) response to the next request."""
        self.announce(method)
        event = self._event(responded=False)
        assert isinstance(event, h11.InformationalResponse), event
        return event.status_code

    def reply(self, method: str | None = "GET") -> Reply:
        """The next response; ``method=None`` when interim() announced its request."""
        if method is not None:
            self.announce(method)
        reply: Reply | None = None
        interim: list[int] = []
        while True:
            event = self._event(responded=reply is not None)
            if isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                reply = Reply(event.status_code, list(event.headers), b"", interim)
            elif isinstance(event, h11.Data):
                assert reply is not None
                reply.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert reply is not None
                return reply
            else:
                raise AssertionError(f"unexpected {event!r}")

    def read_all(self) -> bytes:
        """Raw bytes up to the server's hang-up."""
        data = b""
        while chunk := self.client.recv(65536):
            data += chunk
        return data


@pytest.fixture
def peer() -> Iterator[Peer]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
        server, address = listener.accept()
    server.settimeout(TIMEOUT)  # a handler waiting for bytes that never come gives up
    with client, server:
        yield Peer(client, server, address)
        with contextlib.suppress(OSError):  # wakes a serving thread blocked in recv()
            server.shutdown(socket.SHUT_RDWR)


class Serving:
    """serve() in a thread, for exchanges where the client answers the server."""

    def __init__(self, peer: Peer, app: WSGIApplication) -> None:
        self.kept: list[bool] = []
        self.thread = threading.Thread(target=lambda: self.kept.append(peer.serve(app)))
        self.thread.daemon = True
        self.thread.start()

    def result(self) -> bool:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "serve() did not return"
        [kept] = self.kept
        return kept


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", b"world"]


def echo_path(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode("latin-1")]


def reads_body(seen: list[bytes]) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        seen.append(body)
        start_response("200 OK", [])
        return [b"read %d" % len(body)]

    return app


def counting(calls: list[WSGIEnvironment]) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(environ)
        start_response("200 OK", [])
        return [b"ok"]

    return app


def environ_of(peer: Peer, request: bytes) -> WSGIEnvironment:
    calls: list[WSGIEnvironment] = []
    assert peer.exchange(counting(calls), request)
    assert peer.reply().status == 200
    [environ] = calls
    return environ


# --- a simple exchange ---


def test_a_get_is_answered_with_the_body_and_the_server_headers(peer: Peer) -> None:
    kept = peer.exchange(hello, GET)
    reply = peer.reply()
    assert (reply.status, reply.body) == (200, b"hello world")
    assert reply.header("content-type") == "text/plain"
    assert reply.header("content-length") == "11"  # summed over the list
    assert reply.header("transfer-encoding") is None
    assert reply.header("server") == f"devserve/{__version__}"
    date = reply.header("date")
    assert date is not None
    assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 5
    assert kept  # HTTP/1.1: kept alive


def test_the_app_s_own_server_and_date_headers_are_kept(peer: Peer) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Server", "mine"), ("Date", "Mon, 01 Jan 2024 00:00:00 GMT")])
        return [b""]

    peer.exchange(app, GET)
    reply = peer.reply()
    assert reply.header("server") == "mine"
    assert reply.header("date") == "Mon, 01 Jan 2024 00:00:00 GMT"


def test_a_kept_alive_connection_serves_the_next_request(peer: Peer) -> None:
    peer.client.sendall(http("GET /one HTTP/1.1", "Host: test"))
    assert peer.serve(echo_path)
    assert peer.reply().body == b"/one"
    peer.client.sendall(http("GET /two HTTP/1.1", "Host: test"))
    assert peer.serve(echo_path)  # a new HTTPConnection on the same socket
    assert peer.reply().body == b"/two"


def test_pipelined_requests_are_served_in_one_call(peer: Peer) -> None:
    requests = http("GET /one HTTP/1.1", "Host: test") + http("GET /two HTTP/1.1", "Host: test")
    assert peer.exchange(echo_path, requests)
    assert [peer.reply().body, peer.reply().body] == [b"/one", b"/two"]


def test_a_client_asking_to_close_gets_its_answer_then_the_close(peer: Peer) -> None:
    kept = peer.exchange(hello, http("GET / HTTP/1.1", "Host: test", "Connection: close"))
    reply = peer.reply()
    assert (reply.status, reply.header("connection")) == (200, "close")
    assert not kept


@pytest.mark.parametrize(
    ("version", "app_says", "kept", "says"),
    [
        ("1.1", "keep-alive", True, None),  # HTTP/1.1 keeps alive without saying so
        ("1.0", "keep-alive", False, "close"),  # the app cannot promise what the server won't
        ("1.1", "close", False, "close"),
    ],
)
def test_the_connection_header_is_the_servers(
    peer: Peer, version: str, app_says: str, kept: bool, says: str | None
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Connection", app_says)])
        yield b"streamed"

    assert peer.exchange(app, http(f"GET / HTTP/{version}", "Host: test")) is kept
    reply = peer.reply()
    assert (reply.status, reply.header("connection")) == (200, says)


# --- the environ ---


def test_the_environ_describes_the_request(peer: Peer) -> None:
    environ = environ_of(peer, http("GET /caf%C3%A9/a%20b?q=%20x&y=1 HTTP/1.1", "Host: h:1"))
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/cafÃ©/a b"  # bytes as latin-1 (PEP 3333)
    assert environ["QUERY_STRING"] == "q=%20x&y=1"  # raw
    assert environ["REQUEST_URI"] == "/caf%C3%A9/a%20b?q=%20x&y=1"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("devserve.test", "8123")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    host, port = peer.client.getsockname()
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == (host, str(port))
    assert environ["HTTP_HOST"] == "h:1"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.input_terminated"] is True
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.multiprocess"] is SERVER.multiprocess


def test_headers_become_cgi_variables(peer: Peer) -> None:
    request = http(
        "POST / HTTP/1.1",
        "Host: test",
        "Content-Type: text/plain",
        "Content-Length: 2",
        "X-Tag: a",
        "x-tag: b",
        "Cookie: a=1",
        "Cookie: b=2",
        "X_Forwarded_For: 6.6.6.6",
        "X-Forwarded-For: 1.2.3.4",
        body=b"hi",
    )
    environ = environ_of(peer, request)
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("text/plain", "2")
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ
    assert environ["HTTP_X_TAG"] == "a, b"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the underscored name is dropped


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://example.com/a/b?x=1", "/a/b", "x=1"),
        ("https://example.com/a%20b", "/a b", ""),
        ("http://example.com", "/", ""),
        ("http://example.com?x=1", "/", "x=1"),  # no path
        ("http://example.com?next=/a/b", "/", "next=/a/b"),  # no path, a "/" in the query
        ("HTTP://example.com/a", "/a", ""),  # schemes are case-insensitive
    ],
)
def test_an_absolute_form_target_gives_its_path(
    peer: Peer, target: str, path: str, query: str
) -> None:
    environ = environ_of(peer, http(f"GET {target} HTTP/1.1", "Host: example.com"))
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == (path, query)


# --- request bodies ---


def test_a_content_length_body_is_read_whole(peer: Peer) -> None:
    body = bytes(range(256)) * 800  # more than one read
    seen: list[bytes] = []
    serving = Serving(peer, reads_body(seen))
    peer.client.sendall(http("PUT / HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"))
    peer.client.sendall(body)
    assert peer.reply().body == b"read %d" % len(body)
    assert serving.result()
    assert seen == [body]


def test_a_chunked_body_is_read_whole(peer: Peer) -> None:
    chunks = b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    seen: list[bytes] = []
    request = http("POST / HTTP/1.1", "Host: test", "Transfer-Encoding: chunked", body=chunks)
    assert peer.exchange(reads_body(seen), request + GET)
    assert [peer.reply().body, peer.reply().body] == [b"read 11", b"read 0"]
    assert seen == [b"hello world", b""]  # the GET after it has an empty body


def test_the_body_reads_line_by_line(peer: Peer) -> None:
    lines: list[bytes] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        lines.extend(iter(environ["wsgi.input"].readline, b""))
        start_response("200 OK", [])
        return []

    body = b"one\ntwo\r\nlast"
    peer.exchange(app, http("POST / HTTP/1.1", "Host: t", "Content-Length: 13", body=body))
    assert peer.reply().status == 200
    assert lines == [b"one\n", b"two\r\n", b"last"]


@pytest.mark.parametrize("read", [0, 3])
def test_a_body_the_app_leaves_is_skipped(peer: Peer, read: int) -> None:
    calls: list[tuple[str, bytes]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append((environ["PATH_INFO"], environ["wsgi.input"].read(read)))
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    body = b"GET /trap HTTP/1.1\r\n\r\n" * 50  # would be served if read as requests
    first = http("POST /first HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", body=body)
    assert peer.exchange(app, first + http("GET /second HTTP/1.1", "Host: t"))
    assert [peer.reply().body, peer.reply().body] == [b"/first", b"/second"]
    assert calls == [("/first", body[:read]), ("/second", b"")]


def test_a_large_unread_body_closes_the_connection(
    peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "DISCARD_LIMIT", 100)
    request = http("POST / HTTP/1.1", "Host: t", "Content-Length: 1000", body=b"x" * 1000)
    kept = peer.exchange(hello, request + GET)
    assert peer.reply().body == b"hello world"
    assert not kept


def test_expect_100_continue_gets_an_interim_response_when_the_app_reads(peer: Peer) -> None:
    seen: list[bytes] = []
    serving = Serving(peer, reads_body(seen))
    head = http("POST / HTTP/1.1", "Host: t", "Content-Length: 5", "Expect: 100-continue")
    peer.client.sendall(head)
    assert peer.interim("POST") == 100  # before the client sends its body
    peer.client.sendall(b"hello")
    assert peer.reply(method=None).body == b"read 5"
    assert serving.result()
    assert seen == [b"hello"]


def test_expect_100_continue_gets_no_interim_response_when_the_app_does_not_read(
    peer: Peer,
) -> None:
    serving = Serving(peer, hello)
    head = http("POST / HTTP/1.1", "Host: t", "Content-Length: 5", "Expect: 100-continue")
    peer.client.sendall(head)
    reply = peer.reply("POST")
    assert (reply.interim, reply.status, reply.body) == ([], 200, b"hello world")
    peer.client.sendall(b"hello")  # the client may send it anyway: skipped
    assert serving.result()


def test_an_invalid_chunk_size_gives_a_400_and_a_close(peer: Peer) -> None:
    errors: list[Exception] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            environ["wsgi.input"].read()
        except Exception as error:
            errors.append(error)
            raise
        start_response("200 OK", [])
        return [b"read"]

    chunks = b"zz\r\nhello\r\n0\r\n\r\n"
    request = http("POST / HTTP/1.1", "Host: t", "Transfer-Encoding: chunked", body=chunks)
    kept = peer.exchange(app, request + GET)
    reply = peer.reply("POST")
    assert (reply.status, reply.header("connection")) == (400, "close")
    assert errors == []  # it came with the head: refused before the app
    assert not kept


@pytest.mark.parametrize(
    "chunks",
    [
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5;\x00\r\nhello\r\n0\r\n\r\n",
        b"0 \r\n\r\n",
        b"5;" + b"x" * 100_000 + b"\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"0\r\nContent-Length: 5\r\n\r\n",
        b"0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["bare-cr", "bare-lf", "nul", "space-after-size", "huge-ext", "long-data", "cl", "te"],
)
def test_a_malformed_chunk_arriving_later_fails_the_apps_read(peer: Peer, chunks: bytes) -> None:
    errors: list[Exception] = []
    reading = threading.Event()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        reading.set()
        try:
            environ["wsgi.input"].read()
        except Exception as error:
            errors.append(error)
            raise
        start_response("200 OK", [])
        return [b"read"]

    head = http("POST / HTTP/1.1", "Host: t", "Transfer-Encoding: chunked")
    serving = Serving(peer, app)
    peer.client.sendall(head)
    assert reading.wait(TIMEOUT)  # the head was taken: the body comes after
    with contextlib.suppress(OSError):
        peer.client.sendall(chunks + GET)
    reply = peer.reply("POST")
    assert (reply.status, reply.header("connection")) == (400, "close")
    assert serving.result() is False
    assert len(errors) == 1


def test_a_body_cut_short_by_the_client_is_a_bad_request(peer: Peer) -> None:
    seen: list[bytes] = []
    request = http("POST / HTTP/1.1", "Host: t", "Content-Length: 10", body=b"abc")
    kept = peer.exchange(reads_body(seen), request)
    reply = peer.reply("POST")
    assert (reply.status, reply.header("connection")) == (400, "close")
    assert (seen, kept) == ([], False)


# --- responses ---


def generated(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"one,"
    yield b""  # nothing to send
    yield b"two"


def test_a_generated_body_is_chunked_for_http_1_1(peer: Peer) -> None:
    assert peer.exchange(generated, GET + GET)
    first = peer.reply()
    assert (first.body, first.header("transfer-encoding")) == (b"one,two", "chunked")
    assert first.header("content-length") is None
    assert peer.reply().body == b"one,two"  # the connection went on after the last chunk


def test_a_generated_body_ends_with_the_close_for_http_1_0(peer: Peer) -> None:
    protocols: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        protocols.append(environ["SERVER_PROTOCOL"])
        return generated(environ, start_response)

    kept = peer.exchange(app, b"GET / HTTP/1.0\r\n\r\n")
    raw = peer.read_all()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"one,two"
    assert b"\r\nconnection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert protocols == ["HTTP/1.0"]
    assert not kept


def test_head_gets_the_headers_of_the_body_without_it(peer: Peer) -> None:
    head = http("HEAD / HTTP/1.1", "Host: test")
    assert peer.exchange(hello, head + GET)
    reply = peer.reply("HEAD")
    assert (reply.status, reply.header("content-length"), reply.body) == (200, "11", b"")
    # No body bytes came between the two responses, or this one would not parse.
    assert peer.reply().body == b"hello world"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_a_response_without_a_body_has_no_length(peer: Peer, status: str) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, [])
        return []

    assert peer.exchange(app, GET + GET)
    reply = peer.reply()
    assert reply.status == int(status[:3])
    assert reply.header("content-length") is None
    assert reply.header("transfer-encoding") is None
    assert peer.reply().status == int(status[:3])


def test_the_write_callable_sends_before_the_iterable(peer: Peer) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"written, ")
        write(b"again, ")
        return [b"returned"]

    assert peer.exchange(app, GET + GET)
    reply = peer.reply()
    assert (reply.status, reply.body) == (201, b"written, again, returned")
    assert peer.reply().status == 201


class Body:
    """A response iterable that records its close() and may fail after its first chunk."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        yield b"first"
        if self.fail:
            raise RuntimeError("the body failed")
        yield b"last"

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("fail", [False, True])
def test_the_iterable_is_closed(peer: Peer, fail: bool) -> None:
    body = Body(fail)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return body

    kept = peer.exchange(app, GET)
    assert body.closed == 1
    assert kept is not fail


# --- errors ---


@pytest.mark.parametrize(
    "error",
    [ValueError("boom"), FileNotFoundError(2, "No such file")],
    ids=["ValueError", "FileNotFoundError"],
)
def test_an_app_error_before_the_response_gives_a_500(
    peer: Peer, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/fail":
            raise error
        return hello(environ, start_response)

    kept = peer.exchange(app, http("GET /fail HTTP/1.1", "Host: t") + GET)
    failed = peer.reply()
    assert failed.status == 500
    assert failed.header("content-type") == "text/plain; charset=utf-8"
    assert b"Internal Server Error" in failed.body
    assert failed.header("connection") is None
    assert peer.reply().body == b"hello world"  # the connection went on
    assert kept
    logged = [r.exc_info for r in caplog.records if r.levelno == logging.ERROR]
    assert [info[1] if info else None for info in logged] == [error]  # with its traceback


def test_an_app_error_during_the_body_closes_the_connection(
    peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("failed mid-body")

    kept = peer.exchange(app, GET + GET)
    with pytest.raises(h11.RemoteProtocolError):  # the chunked body never ends
        peer.reply()
    assert not kept
    assert any(r.levelno == logging.ERROR for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK\r\nSet-Cookie: injected=1", []),
        ("200 OK\r\n\r\nHTTP/1.1 302 Found\r\nLocation: http://evil.example/", []),
        ("200 OK\nX-Injected: 1", []),
        ("200 OK\x0bX", []),
        ("2000 OK", []),
        ("99 Too low", []),
        ("600 Too high", []),
        ("OK 200", []),
        ("200 OK", [("X-Vertical-Tab", "a\x0bb")]),
        ("200 OK", [("X-Delete", "a\x7fb")]),
    ],
    ids=[
        "crlf-header",
        "crlf-response",
        "lf",
        "vt",
        "four-digits",
        "below-100",
        "above-599",
        "no-code",
        "header-vt",
        "header-del",
    ],
)
def test_a_status_or_header_that_would_split_the_response_is_a_500(
    peer: Peer, caplog: pytest.LogCaptureFixture, status: str, headers: list[tuple[str, str]]
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, headers)
        return [b"the app's body"]

    peer.exchange(app, GET)
    raw = peer.read_all()
    assert raw.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), raw
    assert raw.count(b"HTTP/1.1") == 1 and b"injected" not in raw.lower(), raw
    assert b"evil" not in raw and b"the app's body" not in raw
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("invalid response" in message for message in errors), errors


@pytest.mark.parametrize("status", ["200 OK", "200", "404 Not Found", "599 X", "200 Caf\xe9"])
def test_valid_statuses_are_sent_as_they_are(peer: Peer, status: str) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, [("X-Tab", "a\tb")])
        return [b"ok"]

    peer.exchange(app, GET)
    reply = peer.reply()
    assert reply.status == int(status[:3]) and reply.body == b"ok"
    assert reply.header("x-tab") == "a\tb"


def test_a_body_shorter_than_its_content_length_closes_the_connection(peer: Peer) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        return [b"short"]

    kept = peer.exchange(app, GET + GET)
    with pytest.raises(h11.RemoteProtocolError):  # 5 bytes, then the close
        peer.reply()
    assert not kept


def too_long(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "3")])
    return [b"too long"]


def head_then_error(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", [])
    yield b"first"
    raise RuntimeError("failed after the first chunk")


@pytest.mark.parametrize(
    ("app", "request_"),
    [(too_long, GET), (head_then_error, http("HEAD / HTTP/1.1", "Host: test"))],
    ids=["more-than-content-length", "head-then-error"],
)
def test_a_failed_response_still_answers_something(
    peer: Peer, app: WSGIApplication, request_: bytes
) -> None:
    kept = peer.exchange(app, request_)
    raw = peer.read_all()
    assert not kept
    assert raw.startswith(b"HTTP/1.1 "), "an empty reply: the response head was lost"


def test_start_response_with_exc_info_after_the_headers_re_raises(peer: Peer) -> None:
    reraised: list[BaseException] = []
    original = ValueError("late failure")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise original
        except ValueError:
            try:
                start_response("500 Internal Server Error", [], sys.exc_info())
            except ValueError as error:
                reraised.append(error)
                raise
        return []

    kept = peer.exchange(app, GET)
    assert reraised == [original]
    assert not kept


def test_start_response_with_exc_info_before_the_headers_replaces_them(peer: Peer) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("changed its mind")
        except ValueError:
            start_response("503 Service Unavailable", [("X-Second", "2")], sys.exc_info())
        return [b"unavailable"]

    assert peer.exchange(app, GET)
    reply = peer.reply()
    assert (reply.status, reply.body) == (503, b"unavailable")
    assert (reply.header("x-first"), reply.header("x-second")) == (None, "2")


def test_start_response_twice_without_exc_info_is_an_error(peer: Peer) -> None:
    errors: list[Exception] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [])
        write(b"sent with a 200, ")
        try:
            start_response("404 Not Found", [])  # PEP 3333: a fatal error
        except Exception as error:
            errors.append(error)
        return [b"then a 404?"]

    peer.exchange(app, GET)
    assert len(errors) == 1


# --- malformed requests ---


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (TLS_HELLO, 400),
        (b"GET / HTTP/1.x\r\nHost: test\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost test\r\n\r\n", 400),
        (http("POST / HTTP/1.1", "Host: t", "Content-Length: 1", "Content-Length: 2"), 400),
        (http("POST / HTTP/1.1", "Host: t", "Transfer-Encoding: gzip"), 400),
        (http("GET / HTTP/1.1", "Host: test", "X-Big: " + "x" * checks.MAX_HEAD), 431),
        (http("GET / HTTP/1.1", "Host: test", "X-Big: " + "x" * 3 * checks.MAX_HEAD), 431),
        (
            http("GET / HTTP/1.1", "Host: t", *[f"X-{n}: 1" for n in range(checks.MAX_HEADERS)]),
            431,
        ),
        (b"GET / HTTP/2.0\r\nHost: test\r\n\r\n", 505),
        (http("GET / HTTP/1.1", "Host: a", "Host: b"), 400),
        (
            http("POST / HTTP/1.1", "Host: t", "Content-Length: 3", "Transfer-Encoding: chunked"),
            400,
        ),
    ],
    ids=[
        "tls",
        "version",
        "no-colon",
        "lengths",
        "gzip",
        "big-head",
        "huge-head",
        "many-headers",
        "http2",
        "two-hosts",
        "length-and-chunked",
    ],
)
def test_a_malformed_request_is_answered_without_the_app(
    peer: Peer, request_: bytes, status: int
) -> None:
    calls: list[WSGIEnvironment] = []
    serving = Serving(peer, counting(calls))  # the client writes more than a socket holds
    peer.client.sendall(request_)
    reply = peer.reply()
    assert (reply.status, reply.header("connection")) == (status, "close")
    assert serving.result() is False
    assert calls == []


def test_a_tls_hello_is_rejected_before_the_client_stops_sending(peer: Peer) -> None:
    calls: list[WSGIEnvironment] = []
    serving = Serving(peer, counting(calls))
    peer.client.sendall(TLS_HELLO[:5])  # no line end: only its first byte gives it away
    assert peer.reply().status == 400
    assert serving.result() is False
    assert calls == []


def test_a_connection_closed_without_a_request_is_let_go(peer: Peer) -> None:
    calls: list[WSGIEnvironment] = []
    assert peer.exchange(counting(calls), b"") is False
    assert (peer.read_all(), calls) == (b"", [])


# --- on_request ---


@pytest.mark.parametrize("fail", [False, True])
def test_on_request_is_told_of_the_start_and_the_end(peer: Peer, fail: bool) -> None:
    told: list[RequestInfo | None] = []
    during: list[list[RequestInfo | None]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        during.append(list(told))
        if fail:
            raise RuntimeError("failed")
        return hello(environ, start_response)

    before = time.monotonic()
    peer.exchange(
        app, http("POST /x?y=1 HTTP/1.1", "Host: t", "Content-Length: 0"), on_request=told.append
    )
    assert len(told) == 2 and told[1] is None
    info = told[0]
    assert isinstance(info, RequestInfo)
    assert (info.method, info.path, info.client) == ("POST", "/x?y=1", "127.0.0.1")
    assert before <= info.started <= time.monotonic()
    assert during == [[info]]  # told before the app ran


# --- http_date ---


def test_http_date_of_the_epoch() -> None:
    assert http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("timestamp", [0, 59, 951782400, 1700000000.9, 4107542399])
def test_http_date_is_an_imf_fixdate(timestamp: float) -> None:
    assert http_date(timestamp) == email.utils.formatdate(int(timestamp), usegmt=True).encode()


def test_http_date_follows_the_second() -> None:
    dates = [http_date(t) for t in (0, 0.9, 1, 0)]
    assert [date[-12:-4] for date in dates] == [b"00:00:00", b"00:00:00", b"00:00:01", b"00:00:00"]


def test_http_date_is_english_whatever_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    # No other locale is sure to be installed: stand in for a German one.
    monkeypatch.setattr(time, "strftime", lambda *args: "Do, 01 Jan. 1970 00:00:00 GMT")
    assert http_date(86400 * 31 + 0.5) == b"Sun, 01 Feb 1970 00:00:00 GMT"
