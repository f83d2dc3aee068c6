"""Live reload's pieces: the loopback rule, the middleware that writes the client's tag, what
the events say, and the control loop's streams on real socket pairs."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devserve import livereload
from devserve._engine import devroutes
from devserve._engine.devroutes import EVENTS, STATUS, DevRoutes, claims, is_loopback_client
from devserve.reloader import SyntaxProblem

TAG = b'<script src="/__devserve__/client.js" data-image="1-ab" defer></script>'

# --- who may ask ---


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1"],
)
def test_loopback_peers_are_this_machine(host: str) -> None:
    assert is_loopback_client(host)


@pytest.mark.parametrize(
    "host",
    ["10.0.0.1", "192.168.1.2", "203.0.113.9", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1%eth0"],
)
def test_other_peers_are_not(host: str) -> None:
    assert not is_loopback_client(host)
    assert not claims("GET", EVENTS, host, frozenset({EVENTS}))


@pytest.mark.parametrize("host", ["-", "", "localhost", "127.0.0.1, 10.0.0.1"])
def test_what_is_not_an_address_is_not_loopback(host: str) -> None:
    """A header's value (``X-Forwarded-For: 127.0.0.1``) never reaches the rule: only the
    socket's peer does; anything else that is not an address counts as remote."""
    assert not is_loopback_client(host)


@pytest.mark.parametrize(
    "header",
    [b"X-Forwarded-For", b"x-forwarded-for", b"Forwarded", b"X-Forwarded-Host", b"X-Real-IP"],
)
def test_what_came_through_a_proxy_is_never_claimed(header: bytes) -> None:
    """A proxy on this machine connects from loopback, for anyone: not this machine's."""
    paths = frozenset({EVENTS})
    assert not claims("GET", EVENTS, "127.0.0.1", paths, [(header, b"127.0.0.1")])
    assert claims("GET", EVENTS, "127.0.0.1", paths, [(b"Host", b"localhost")])


def test_claims_only_a_get_of_its_paths() -> None:
    paths = frozenset({EVENTS})
    assert claims("GET", EVENTS, "127.0.0.1", paths)
    assert claims("GET", EVENTS + "?t=1", "::1", paths)
    assert not claims("POST", EVENTS, "127.0.0.1", paths)
    assert not claims("HEAD", EVENTS, "127.0.0.1", paths)
    assert not claims("GET", EVENTS + "/x", "127.0.0.1", paths)
    assert not claims("GET", "/__devserve__/client.js", "127.0.0.1", paths)
    assert not claims("GET", EVENTS, "127.0.0.1", frozenset())


# --- the tag ---


def run(
    app: Any, method: str = "GET", path: str = "/", **environ: str
) -> tuple[str, dict[str, str], bytes]:
    """Call a WSGI app as a server does (a loopback peer, unless ``environ`` says): status,
    headers, the whole body (write() too)."""
    seen: dict[str, Any] = {}
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)
        return written.append

    request = {"REQUEST_METHOD": method, "PATH_INFO": path, "devserve.peer": "127.0.0.1"}
    body = app({**request, **environ}, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen["status"], seen["headers"], b"".join(written) + data


def html_app(
    chunks: Iterable[bytes],
    headers: Iterable[tuple[str, str]] = (("Content-Type", "text/html; charset=utf-8"),),
    status: str = "200 OK",
    lazily: bool = False,
) -> Any:
    def app(environ: Any, start_response: Any) -> Iterator[bytes] | list[bytes]:
        if not lazily:
            start_response(status, list(headers))
            return list(chunks)

        def generate() -> Iterator[bytes]:
            start_response(status, list(headers))  # at the first iteration, as WSGI allows
            yield from chunks

        return generate()

    return app


def injected(app: Any) -> livereload.Injector:
    return livereload.Injector(app, "1-ab")


@pytest.mark.parametrize(
    "chunks",
    [
        [b"<html><body>hi</body></html>"],
        [b"<html><body>hi</bo", b"dy></html>"],
        [b"<html><body>hi<", b"/", b"BODY", b">", b"</html>"],
        [b"<html><body>hi", b"", b"</Body></html>"],
    ],
)
def test_the_tag_goes_before_the_last_closing_body_however_the_chunks_fall(
    chunks: list[bytes],
) -> None:
    _, _, body = run(injected(html_app(chunks)))
    original = b"".join(chunks)
    at = original.lower().rindex(b"</body")
    assert body == original[:at] + TAG + original[at:]


def test_a_closing_body_in_a_script_string_is_not_the_place() -> None:
    page = [b'<body><script>var t = "<p></body>";</script>', b"<p>end</p></body></html>"]
    _, _, body = run(injected(html_app(page)))
    assert body == page[0] + b"<p>end</p>" + TAG + b"</body></html>"


def test_only_what_may_begin_a_closing_body_is_held_back() -> None:
    """A streamed page's chunk is sent whole unless its end may be the start of
    ``</body``: a progress page's script runs at once."""
    splice = livereload._Splice(TAG)
    splice.decide("200 OK", [("Content-Type", "text/html")])
    assert splice.feed(b"<body><script>p(50)</script>") == b"<body><script>p(50)</script>"
    assert splice.feed(b"<p>x</p></Bo") == b"<p>x</p>"
    assert splice.feed(b"dy></html>") == b""
    assert splice.finish() == TAG + b"</Body></html>"


def test_an_error_response_replacing_the_first_starts_over() -> None:
    """``start_response`` again with ``exc_info`` while nothing was sent (all the app
    yielded was held back): the error page alone goes out, its length right."""
    error = b"<body>failed</body>"

    def app(environ: Any, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        yield b"<"  # may begin </body: held back, so no header is sent yet
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "text/html"), ("Content-Length", str(len(error)))],
            (ValueError, ValueError("x"), None),
        )
        yield error

    status, headers, body = run(injected(app))
    assert status == "500 Internal Server Error"
    assert body == b"<body>failed" + TAG + b"</body>"
    assert int(headers["Content-Length"]) == len(body)


def test_a_page_without_a_closing_body_gets_it_at_the_end() -> None:
    _, _, body = run(injected(html_app([b"<p>bare", b" page</p>"])))
    assert body == b"<p>bare page</p>" + TAG


def test_the_length_grows_by_the_tag_and_the_validators_go() -> None:
    page = b"<html><body>x</body></html>"
    headers = [
        ("Content-Type", "text/html"),
        ("Content-Length", str(len(page))),
        ("ETag", '"1"'),
        ("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT"),
        ("X-Other", "kept"),
    ]
    _, sent, body = run(injected(html_app([page], headers)))
    assert int(sent["Content-Length"]) == len(body) == len(page) + len(TAG)
    assert "ETag" not in sent and "Last-Modified" not in sent
    assert sent["X-Other"] == "kept"


def test_a_start_response_called_at_the_first_iteration_is_followed() -> None:
    _, _, body = run(injected(html_app([b"<body>x</body>"], lazily=True)))
    assert body == b"<body>x" + TAG + b"</body>"
    _, _, body = run(
        injected(html_app([b"{}"], [("Content-Type", "application/json")], lazily=True))
    )
    assert body == b"{}"


def test_what_write_sends_is_spliced_too() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/html")])
        write(b"<body>written")
        return [b"</body>"]

    assert run(injected(app))[2] == b"<body>written" + TAG + b"</body>"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("Content-Type", "application/json")]),
        ("200 OK", [("Content-Type", "text/plain")]),
        ("200 OK", [("Content-Type", "application/xhtml+xml")]),
        ("200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")]),
        ("200 OK", [("Content-Type", "text/html"), ("Content-Disposition", "attachment")]),
        ("200 OK", [("Content-Type", "text/html; charset=utf-16")]),
        ("206 Partial Content", [("Content-Type", "text/html")]),
        ("204 No Content", [("Content-Type", "text/html")]),
        ("304 Not Modified", [("Content-Type", "text/html")]),
        ("302 Found", [("Content-Type", "text/html"), ("Location", "/")]),
        ("101 Switching Protocols", [("Content-Type", "text/html")]),
    ],
)
def test_what_is_not_a_shown_html_page_is_left_alone(
    status: str, headers: list[tuple[str, str]]
) -> None:
    chunks = [b"<body>x</body>"]
    body = html_app(chunks, headers, status)
    app = injected(body)
    sent_status, sent, out = run(app)
    assert (sent_status, sent, out) == (status, dict(headers), b"<body>x</body>")


def test_head_gets_the_headers_a_get_would_and_the_body_object_as_it_is() -> None:
    page = b"<body>x</body>"
    headers = [("Content-Type", "text/html"), ("Content-Length", "14"), ("ETag", '"1"')]
    app = injected(html_app([page], headers))
    _, sent, body = run(app, method="HEAD")
    assert body == page  # what the app gave: the server sends no body for HEAD
    assert int(sent["Content-Length"]) == len(page) + len(TAG) and "ETag" not in sent
    marker: list[bytes] = [b"{}"]
    plain = injected(lambda e, s: (s("200 OK", [("Content-Type", "application/json")]), marker)[1])
    assert plain({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None) is marker


@pytest.mark.parametrize(
    "environ",
    [
        {"HTTP_SEC_FETCH_DEST": "empty"},  # fetch(), XHR: an htmx fragment, JSON...
        {"HTTP_SEC_FETCH_DEST": "iframe"},  # the page around it reloads it
        {"devserve.peer": "10.0.0.7"},  # a browser elsewhere: it cannot open the stream
        {"devserve.peer": "10.0.0.7", "REMOTE_ADDR": "127.0.0.1"},  # --proxy-mode's rewrite
        {"HTTP_X_FORWARDED_FOR": "127.0.0.1"},  # through a proxy on this machine
    ],
)
def test_no_tag_for_what_is_no_page_of_this_machine(environ: dict[str, str]) -> None:
    page = [b"<body>x</body>"]
    assert run(injected(html_app(page)), **environ)[2] == b"<body>x</body>"
    assert TAG in run(injected(html_app(page)), HTTP_SEC_FETCH_DEST="document")[2]


def test_the_apps_close_is_called() -> None:
    closed = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"<body></body>"

        def close(self) -> None:
            closed.append(True)

    def app(environ: Any, start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/html")])
        return Body()

    run(injected(app))
    assert closed == [True]


def test_the_client_script_is_the_middlewares_to_serve() -> None:
    status, headers, body = run(injected(html_app([b"x"])), path=livereload.CLIENT)
    assert status == "200 OK" and headers["Content-Type"].startswith("text/javascript")
    assert b"EventSource" in body and int(headers["Content-Length"]) == len(body)
    assert run(injected(html_app([b"x"])), method="HEAD", path=livereload.CLIENT)[2] == b""


def test_every_image_has_its_own_id() -> None:
    assert len({devroutes.new_image() for _ in range(100)}) == 100


# --- what the events say ---


def test_a_syntax_problem_as_an_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    problem = SyntaxProblem(str(tmp_path / "shop" / "views.py"), 3, "expected ':'", "if x")
    assert livereload.problem_event(problem) == {
        "file": os.path.join("shop", "views.py"),
        "line": 3,
        "message": "SyntaxError: expected ':'",
        "source": "if x",
    }


def test_a_failed_load_as_an_event_names_the_projects_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    module = tmp_path / "broken.py"
    module.write_text("X = 1\nraise KeyError('settings')\n", encoding="utf-8")
    try:
        exec(compile(module.read_text(), str(module), "exec"), {})
    except KeyError as error:
        event = livereload.failure_event(error)
    assert event == {
        "file": "broken.py",
        "line": 2,
        "message": "KeyError: 'settings'",
        "source": "raise KeyError('settings')",
    }
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n", encoding="utf-8")
    try:
        compile(bad.read_text(), str(bad), "exec")
    except SyntaxError as error:
        wrapped = RuntimeError("cannot import")
        wrapped.__cause__ = error
        syntax = livereload.failure_event(wrapped)
    assert (syntax["file"], syntax["line"], syntax["source"]) == ("bad.py", 1, "def f(:")
    assert syntax["message"].startswith("SyntaxError: ")


def test_a_static_file_is_named_by_its_url() -> None:
    urls = [("/p/shop/static", "/shop/static/"), ("/p/site/static", "/assets/")]
    assert livereload.static_url("/p/shop/static/css/a.css", urls) == "/shop/static/css/a.css"
    assert livereload.static_url("/p/site/static/b.css", urls) == "/assets/b.css"
    assert livereload.static_url("/q/app/static/x/c.css", urls) == "/static/x/c.css"
    assert livereload.static_url("/q/loose.css", urls) == "/static/loose.css"


# --- the control loop's streams ---


class Loop:
    """A control loop's streams (:class:`DevRoutes` in a selector) and their clients, on
    socket pairs."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.own = DevRoutes("1-ab")
        self.own.attach(self.selector)
        self.clients: list[socket.socket] = []

    def connect(self, greeted: bool = True) -> socket.socket:
        """A client whose connection the loop takes (its greeting read, unless told)."""
        server, client = socket.socketpair()
        self.clients.append(client)
        self.own.take(server.detach(), EVENTS)
        if greeted:
            read_events(client)
        return client

    def close(self) -> None:
        self.own.close_all()
        self.selector.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    made = Loop()
    yield made
    made.close()


def read_events(client: socket.socket, until: bytes = b"\n\n") -> bytes:
    client.settimeout(2)
    data = b""
    while not data.endswith(until):
        data += client.recv(65536)
    return data


def test_a_stream_is_greeted_then_told_every_event(loop: Loop) -> None:
    client = loop.connect(greeted=False)
    greeting = read_events(client)
    assert greeting.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/event-stream" in greeting
    assert greeting.endswith(b'event: hello\ndata: {"image":"1-ab","changes":0}\n\n')
    loop.own.send("css", {"path": "/static/a.css"})
    assert read_events(client) == b'event: css\ndata: {"path":"/static/a.css"}\n\n'
    loop.own.send("error", {"file": "a.py"})
    error = b'event: error\ndata: {"file":"a.py"}\n\n'
    assert read_events(client) == error
    later = loop.connect(greeted=False)  # an error stands: told to who comes later
    hello = b'{"image":"1-ab","changes":1}\n\n'  # it missed one css event
    assert read_events(later, until=error).endswith(hello + error)
    assert loop.own.open_streams == 2


def test_a_stream_whose_client_left_is_closed_by_the_loop(loop: Loop) -> None:
    loop.connect().close()
    for key, mask in loop.selector.select(timeout=2):
        loop.own.ready(key.data, mask)
    assert loop.own.open_streams == 0


def test_a_client_that_does_not_read_is_dropped_not_waited_for(loop: Loop) -> None:
    server, client = socket.socketpair()
    loop.clients.append(client)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    loop.own.take(server.detach(), EVENTS)
    big = {"message": "x" * 8192}
    for _ in range(devroutes.MAX_PENDING // 8192 + 64):
        loop.own.send("error", big)  # never blocks the loop
        if not loop.own.open_streams:
            break
    assert loop.own.open_streams == 0


def test_after_close_all_no_stream_opens(loop: Loop) -> None:
    client = loop.connect()
    loop.own.close_all()
    assert client.recv(100) == b""  # the browser reconnects, to the next image
    late = loop.connect(greeted=False)
    late.settimeout(2)
    assert late.recv(100) == b""
    assert loop.own.open_streams == 0


def test_a_reload_tells_every_stream_to_reload_before_it_ends(loop: Loop) -> None:
    client = loop.connect()
    loop.own.close_all(reloading=True)
    assert read_events(client) == b"event: reload\ndata: {}\n\n"
    assert client.recv(100) == b""


def test_held_streams_are_greeted_on_release_and_told_nothing_before(loop: Loop) -> None:
    """A prefork master whose previous code still serves: no hello until it stops."""
    loop.own.hold()
    client = loop.connect(greeted=False)
    loop.own.send("css", {"path": "/a.css"})
    client.settimeout(0.2)
    with pytest.raises(TimeoutError):
        client.recv(100)
    loop.own.release()
    assert read_events(client).endswith(b'event: hello\ndata: {"image":"1-ab","changes":1}\n\n')


def test_what_a_batch_needs_no_restart_for_is_told(loop: Loop) -> None:
    client = loop.connect()
    live = livereload.Live("1-ab", loop.own, [("/p/shop/static", "/shop/static/")])
    live.changed(["/p/shop/static/a.css", "/p/shop/static/b.js", "/p/x/static/c.png"], [])
    expected = [
        b'event: css\ndata: {"path":"/shop/static/a.css"}\n\n',
        b'event: reload\ndata: {"paths":["/shop/static/b.js","/static/c.png"]}\n\n',
    ]
    assert read_events(client, until=expected[-1]) == b"".join(expected)
    live.changed([], ["/p/templates/page.html"])  # a template the framework re-read
    assert read_events(client) == b"event: reload\ndata: {}\n\n"
    live.refused([SyntaxProblem("/p/a.py", 1, "invalid syntax", "def (")])
    assert b'"line":1,"message":"SyntaxError: invalid syntax"' in read_events(client)


@pytest.mark.parametrize("path", [EVENTS, STATUS])
@pytest.mark.parametrize(
    ("peer", "forwarded", "taken"),
    [
        ("127.0.0.1", "", True),
        ("::1", "", True),
        ("::ffff:127.0.0.1", "", True),
        ("10.0.0.1", "127.0.0.1", False),  # a header never makes a remote peer loopback
        ("2001:db8::5", "::1", False),
        ("127.0.0.1", "203.0.113.9", False),  # a proxy on this machine: for someone else
        ("192.168.1.5", "", False),
    ],
)
def test_a_connection_reaches_the_loop_only_from_a_loopback_peer(
    peer: str, forwarded: str, taken: bool, path: str
) -> None:
    """The whole path a request takes in every mode: read by the connection, which hands it
    to the loop, or gives it to the app."""
    from devserve._engine.connection import HTTPConnection
    from devserve._engine.wire import ServerInfo

    handed: list[str] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"app"]

    def to_loop(fd: int, target: str) -> None:
        handed.append(target)
        os.close(fd)

    server_end, client = socket.socketpair()
    info = ServerInfo("127.0.0.1", 8069, own_paths=frozenset({EVENTS, STATUS}), to_loop=to_loop)
    header = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}\r\n".encode()
    # The threaded server's loop reads a request's head itself: it claims the same ones.
    read_by_loop = HTTPConnection(server_end, (peer, 5555), app, info)
    assert read_by_loop.feed(request)
    assert read_by_loop.claimed_by_loop() == (path if taken else None)
    client.sendall(request)
    client.shutdown(socket.SHUT_WR)
    server_end.settimeout(2)
    HTTPConnection(server_end, (peer, 5555), app, info).serve()
    client.settimeout(2)
    answer = client.recv(65536)
    assert handed == ([path] if taken else [])
    assert answer.endswith(b"app") != taken
    server_end.close()
    client.close()


def test_the_status_is_one_json_answer_then_the_connection_closes(loop: Loop) -> None:
    loop.own.status = lambda: {"pid": 42, "image": "1-ab", "text": "x" * 300_000}
    server, client = socket.socketpair()
    loop.clients.append(client)
    loop.own.take(server.detach(), STATUS + "?now")
    # A big answer goes out as the client reads it, from the loop's selector.
    data, done = b"", False
    client.setblocking(False)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        for key, mask in loop.selector.select(timeout=0.01):
            loop.own.ready(key.data, mask)
        with contextlib.suppress(BlockingIOError):
            chunk = client.recv(1 << 20)
            data += chunk
            done = not chunk
    assert done
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["pid"] == 42
    assert loop.own.open_streams == 0  # no stream: the connection is closed


def test_a_status_that_cannot_be_made_is_a_500_saying_why(loop: Loop) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no status today")

    loop.own.status = broken
    server, client = socket.socketpair()
    loop.clients.append(client)
    loop.own.take(server.detach(), STATUS)
    client.settimeout(2)
    answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error")
    assert answer.endswith(b'{"error": "RuntimeError: no status today"}')


def test_the_scoreboard_is_shared_with_a_forked_worker() -> None:
    from devserve._engine.scoreboard import Scoreboard
    from devserve._engine.wire import RequestInfo

    board = Scoreboard()
    board.clear(2)
    pid = os.fork()
    if pid == 0:  # the worker: writes its request, as a request starts
        board.write(2, RequestInfo("POST", "/cart?x=1", "::1", 123.5), 7)
        os._exit(0)
    os.waitpid(pid, 0)
    request, served = board.read(2)
    assert served == 7 and request == RequestInfo("POST", "/cart?x=1", "::1", 123.5)
    board.write(2, None, 8)
    assert board.read(2) == (None, 8)
    assert board.read(0) == (None, 0) and board.read(board.slots + 1) == (None, 0)
    board.close()
