"""The threaded server's control loop, driven step by step in the test's own thread."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from devserve import servers
from devserve._engine import threaded
from devserve._engine.pool import HeldConnection
from devserve._engine.threaded import ThreadedServer
from devserve.reloader import FileChanges
from devserve.servers import Outcome


def hello(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    instance = ThreadedServer(hello, servers.bind_socket("127.0.0.1", 0))
    yield instance
    instance.close()


def pump(server: ThreadedServer, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run the control loop's steps until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the control loop did not get there in time"
        server._step(0.01)


def get(server: ThreadedServer, connection: socket.socket) -> bytes:
    connection.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    connection.settimeout(0.01)
    deadline = time.monotonic() + 5
    while not answer.endswith(b"hello"):
        assert time.monotonic() < deadline, answer
        try:
            answer += connection.recv(4096)
        except TimeoutError:
            server._step(0.01)
    return answer


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_wins_over_a_reload_decided_in_the_same_wake_up(
    server: ThreadedServer, stop: int
) -> None:
    server.handle_event(signal.SIGHUP)
    server.handle_event(stop)
    assert server._outcome is Outcome.STOP


def test_a_stop_signal_wins_over_a_batch_that_reloads(server: ThreadedServer) -> None:
    server.on_changes = lambda changes: changes.paths
    server.handle_event(FileChanges(frozenset({"/x.py"}), time.monotonic()))
    server.handle_event(signal.SIGINT)
    assert server._outcome is Outcome.STOP


def test_a_reload_is_caused_by_the_files_that_reload(server: ThreadedServer) -> None:
    server.on_changes = lambda changes: frozenset({"/app/views.py"})
    server.handle_event(
        FileChanges(frozenset({"/app/views.py", "/app/static/site.css"}), time.monotonic())
    )
    assert server.reload is not None and server.reload.cause == "/app/views.py"


def test_changes_during_a_reload_are_still_prepared(server: ThreadedServer) -> None:
    prepared: list[frozenset[str]] = []
    server.on_changes = lambda changes: prepared.append(changes.paths) or changes.paths
    server.handle_event(signal.SIGHUP)
    server.handle_event(FileChanges(frozenset({"/late.py"}), time.monotonic()))
    assert server._outcome is Outcome.RELOAD
    assert prepared == [frozenset({"/late.py"})]  # compiled for the next image


def test_idle_connections_expire(server: ThreadedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threaded, "IDLE_CONNECTION_TIMEOUT", 0.2)
    server._set_accepting(True)
    idle = [socket.create_connection(server.address) for _ in range(3)]
    try:
        pump(server, lambda: len(server._idle) == 3)
        pump(server, lambda: not server._idle)  # closed once idle for 0.2 s
        for connection in idle:
            connection.settimeout(1)
            assert connection.recv(10) == b""
    finally:
        for connection in idle:
            connection.close()


def test_at_the_cap_a_new_client_takes_the_place_of_the_oldest_idle_one(
    server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.max_held = 3
    server._set_accepting(True)
    slow = socket.create_connection(server.address)
    slow.sendall(b"GET / HTTP/1.1\r\nHost:")  # a head begun: let go after the idle ones
    pump(server, lambda: len(server._arriving) == 1)
    idle = []
    for _ in range(2):
        idle.append(socket.create_connection(server.address))
        pump(server, lambda: len(server._idle) == len(idle))
    for held in server._idle.values():
        held.since -= threaded.LET_GO_IDLE_AFTER  # idle for a while now
    late = socket.create_connection(server.address)
    try:
        assert get(server, late).startswith(b"HTTP/1.1 200")  # served at once
        idle[0].settimeout(1)
        assert idle[0].recv(10) == b""  # the oldest idle one made room
        assert len(server._arriving) == 1  # the slow one stays while idle ones can go
        pump(server, lambda: "let go for newer ones" in caplog.text)
    finally:
        for connection in (slow, *idle, late):
            connection.close()


@pytest.mark.parametrize("fresh_client", [False, True], ids=["none-idle", "idle-just-accepted"])
def test_at_the_cap_the_slowest_request_goes_before_a_fresh_client(
    server: ThreadedServer, fresh_client: bool
) -> None:
    server.max_held = 3 if fresh_client else 2
    server._set_accepting(True)
    slow = []
    for _ in range(2):
        slow.append(socket.create_connection(server.address))
        slow[-1].sendall(b"GET / HTTP/1.1\r\nHost:")
        pump(server, lambda: len(server._arriving) == len(slow))
    fresh = None
    if fresh_client:
        fresh = socket.create_connection(server.address)  # accepted, its request on its way
        pump(server, lambda: len(server._idle) == 1)
    late = socket.create_connection(server.address)
    try:
        assert get(server, late).startswith(b"HTTP/1.1 200")
        slow[0].settimeout(1)
        assert slow[0].recv(100).startswith(b"HTTP/1.1 408 ")  # the one begun first
        assert len(server._arriving) == 1
        if fresh is not None:
            assert get(server, fresh).startswith(b"HTTP/1.1 200")  # never let go for it
    finally:
        for connection in (*slow, fresh, late):
            if connection is not None:
                connection.close()


def test_the_loop_cost_does_not_scan_every_held_connection(server: ThreadedServer) -> None:
    server._set_accepting(True)
    clients = [socket.create_connection(server.address) for _ in range(200)]
    try:
        pump(server, lambda: len(server._idle) == 200)
        calls = 0
        original = server._held

        def counted(fd: int) -> object:
            nonlocal calls
            calls += 1
            return original(fd)

        server._held = counted  # type: ignore[method-assign, assignment]
        for _ in range(50):
            server._step(0)
            server._next_expiry()
        assert calls <= 2 * 100, calls  # a look at the heap's top, not at all 200
    finally:
        for connection in clients:
            connection.close()


def test_an_error_on_one_connection_closes_it_and_the_loop_goes_on(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server._set_accepting(True)
    original = server._request_arrived
    failures = [MemoryError("out of address space")]

    def arrived(held: HeldConnection) -> None:
        if failures:
            raise failures.pop()
        original(held)

    monkeypatch.setattr(server, "_request_arrived", arrived)
    victim = socket.create_connection(server.address)
    victim.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    pump(server, lambda: not failures)
    victim.settimeout(1)
    with contextlib.suppress(ConnectionResetError):  # closed with its request unread
        assert victim.recv(100) == b""  # closed: that connection only
    assert "the control loop met an error and goes on" in caplog.text
    fine = socket.create_connection(server.address)
    try:
        assert get(server, fine).startswith(b"HTTP/1.1 200")
    finally:
        for connection in (victim, fine):
            connection.close()


def test_the_loop_survives_an_error_of_its_own(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = [RuntimeError("a bug in a step"), MemoryError(), None]

    def step(timeout: float | None) -> None:
        error = steps.pop(0)
        if error is not None:
            raise error
        server.handle_event(signal.SIGTERM)

    monkeypatch.setattr(server, "_step", step)
    with monkeypatch.context() as patched:  # run() without touching the process's signals
        patched.setattr(servers, "capture_signals", lambda *args: contextlib.nullcontext())
        assert server.run() is Outcome.STOP
    assert steps == []


def test_a_reload_waits_for_late_writes_and_names_every_file(server: ThreadedServer) -> None:
    server.on_changes = lambda changes: changes.paths
    server.handle_event(FileChanges(frozenset({"/app/a.py"}), time.monotonic()))
    assert server._outcome is Outcome.RELOAD
    server.handle_event(FileChanges(frozenset({"/app/b.py"}), time.monotonic()))  # late
    answers = iter([0.0, 0.0, 0.01])  # the watcher still sees writes, then they stop
    server.changes_quiet_for = lambda: next(answers, 10.0)
    started = time.monotonic()
    server._let_writes_settle()
    assert time.monotonic() - started >= servers.LATE_QUIET  # after the last late batch
    assert next(answers, None) is None  # asked until quiet
    assert server.reload is not None and server.reload.cause == "/app/a.py, /app/b.py"


def test_the_wait_for_late_writes_is_capped(server: ThreadedServer) -> None:
    server.on_changes = lambda changes: changes.paths
    server.handle_event(FileChanges(frozenset({"/app/a.py"}), time.monotonic()))
    assert server.reload is not None
    server.reload = dataclasses.replace(
        server.reload, decided=time.monotonic() - servers.SETTLE_MAX + 0.1
    )
    server.changes_quiet_for = lambda: 0.0  # a writer that never stops
    started = time.monotonic()
    server._let_writes_settle()
    assert time.monotonic() - started < 1.0


def test_stale_deadlines_do_not_pile_up(server: ThreadedServer) -> None:
    server._set_accepting(True)
    idle = socket.create_connection(server.address)  # at the top of the heap for 30 s
    busy = socket.create_connection(server.address)
    try:
        pump(server, lambda: len(server._idle) == 2)
        for _ in range(300):  # each request leaves the entry of an old deadline behind
            assert get(server, busy).startswith(b"HTTP/1.1 200")
        assert len(server._expiries) <= 2 * 2 + 64
    finally:
        idle.close()
        busy.close()


def test_a_body_the_loop_receives_too_slowly_is_a_408(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threaded, "RATE_WINDOW", 0.2)
    server._set_accepting(True)
    slow = socket.create_connection(server.address)
    try:
        slow.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\nx")
        pump(server, lambda: any(h.body_since for h in server._arriving.values()))
        assert server._loop_bytes == 0  # what came with the head is h11's already
        answer = b""
        slow.settimeout(0.01)
        deadline = time.monotonic() + 5
        while not answer:  # a byte now and then: progress, but far below the floor
            assert time.monotonic() < deadline
            with contextlib.suppress(OSError):
                slow.send(b"x")
            server._step(0.05)
            with contextlib.suppress(TimeoutError):
                answer = slow.recv(200)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"slower than" in answer
        assert not server._arriving and server._loop_bytes == 0
    finally:
        slow.close()


def test_a_reload_with_no_change_since_its_decision_does_not_wait(
    server: ThreadedServer,
) -> None:
    server.on_changes = lambda changes: changes.paths
    # Its own batch's last write came 5 ms before the reload was decided (as it settled).
    server.changes_quiet_for = lambda: 0.005
    server.handle_event(FileChanges(frozenset({"/app/a.py"}), time.monotonic()))
    started = time.monotonic()
    server._let_writes_settle()
    assert time.monotonic() - started < servers.LATE_QUIET / 2  # every reload's latency
