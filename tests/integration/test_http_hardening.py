"""Hostile and slow HTTP clients against the real CLI (threaded mode), beyond the request
corpus (``test_corpus.py``, every mode): a property-based fuzz of a valid POST, and slow
clients (trickled heads and bodies) against a capped thread pool.

The fuzz shares one server process, the slow clients another.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from devserve._engine.threaded import LOOP_BODY
from devserve._engine.wire import HEAD_TIMEOUT, RATE_WINDOW
from tests.integration.harness import APPS, DevserveProcess, start_in, wait_until
from tests.integration.raw import (
    CHUNKED,
    exchange,
    http,
    parse_responses,
    post,
    read_to_end,
    seen,
)

LIMIT_MIB = 1  # --limit-request-body of the corpus server
THREADS = 4  # --max-http-threads of the slow-client server
FLOOD = 600  # slow uploads at once
TIMEOUT = 5.0  # every request of the fuzz

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


OVER_LIMIT_CHUNK = b"%x\r\n" % ((LIMIT_MIB << 20) + 1) + b"a" * ((LIMIT_MIB << 20) + 1)


# --- beyond the corpus (test_corpus.py) ---


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
            reply = read_to_end(sock)
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


def test_trickling_small_bodies_hold_no_thread(capped_server: DevserveProcess) -> None:
    server = capped_server
    before = seen(server)
    with contextlib.ExitStack() as stack:
        for _ in range(THREADS * 3):  # more than there are threads
            slow = stack.enter_context(socket.create_connection((server.host, server.port)))
            slow.sendall(post(b"Content-Length: 100", body=b"0123456789"))
        for _ in range(10):  # the loop holds their bodies' start: every thread is free
            started = time.monotonic()
            assert server.request("/", timeout=5).status == 200
            assert time.monotonic() - started < 1.0
        assert seen(server).entered == before.entered + 10  # only the quick ones
    # The clients hung up: each request, its body cut short, never gets it whole (a 400).
    wait_until(lambda: seen(server).entered == before.entered + 10 + THREADS * 3, 5, "400s")
    assert seen(server).completed == before.completed + 10


def test_a_slow_upload_flood_keeps_fast_clients_served(tmp_path: Path) -> None:
    """Hundreds of uploads trickled a byte at a time (default settings): they hold no thread
    and no memory to speak of; fast clients go on being served, the process lives."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    server = _start(tmp_path, "--limit-memory-hard", "2560")
    try:
        stop = threading.Event()
        with contextlib.ExitStack() as stack:
            uploads = [
                stack.enter_context(socket.create_connection((server.host, server.port)))
                for _ in range(FLOOD)
            ]
            for upload in uploads:
                upload.sendall(post(b"Content-Length: 100000", body=b"x"))
            trickler = threading.Thread(target=_trickle, args=(uploads, stop), name="trickler")
            trickler.start()
            stack.callback(trickler.join, 10)
            stack.callback(stop.set)
            durations = []
            for _ in range(20):
                started = time.monotonic()
                assert server.request("/", timeout=5).status == 200
                durations.append(time.monotonic() - started)
            assert max(durations) < 1.0, durations
            threads = psutil.Process(server.pid).num_threads()
            assert threads < 20, f"{threads} threads for {FLOOD} slow uploads"
            assert server.popen.poll() is None
    finally:
        server.stop()


def test_many_slow_connections_never_stall_a_new_client(tmp_path: Path) -> None:
    """1,500 connections trickling their heads (more than the old fixed cap of 512): a new
    client is still answered at once."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    server = _start(tmp_path)
    stop = threading.Event()
    try:
        with contextlib.ExitStack() as stack:
            slow = []
            for index in range(1500):
                sock = stack.enter_context(socket.create_connection((server.host, server.port)))
                sock.sendall(b"GET /slow/%d HTTP/1.1\r\nHost: x\r\nX-Slow: " % index)
                slow.append(sock)
            trickler = threading.Thread(target=_trickle, args=(slow, stop), name="trickler")
            trickler.start()
            stack.callback(trickler.join, 10)
            stack.callback(stop.set)
            for _ in range(10):
                started = time.monotonic()
                assert server.request("/", timeout=5).status == 200
                assert time.monotonic() - started < 1.0
    finally:
        server.stop()


def test_a_large_body_slower_than_the_floor_is_a_408(capped_server: DevserveProcess) -> None:
    server = capped_server
    offset = len(server.log)
    before = seen(server)
    with socket.create_connection((server.host, server.port), timeout=RATE_WINDOW + 10) as slow:
        # Over what the loop receives: a thread reads it, and must not be held for ever.
        slow.sendall(post(b"Content-Length: %d" % (LOOP_BODY * 2), body=b"x" * 100))
        wait_until(lambda: seen(server).entered > before.entered, 5, "the app to read")
        began = time.monotonic()
        while not _answered([slow]):  # a byte now and then: never a 30 s stall
            with contextlib.suppress(OSError):
                slow.send(b"x")
            assert time.monotonic() - began < RATE_WINDOW + 5, "never cut"
            time.sleep(0.5)
        [response] = parse_responses(read_to_end(slow).data)
        assert response.status == 408 and b"slower than" in response.body
    server.wait_for_log(r'"POST /echo HTTP/1\.1" 408 ', timeout=5, after=offset)
    assert time.monotonic() - began >= RATE_WINDOW - 1


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
            assert read_to_end(s).data.startswith(b"HTTP/1.1 408 ")
        server.wait_for_log(LOOP_408, timeout=5)
    assert re.search(r"devserve\.access: \S+ bad request \(408\): ", server.log)
