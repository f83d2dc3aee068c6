"""The threaded server's control loop, driven step by step in the test's own thread."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from devserve import servers
from devserve.reloader import FileChanges
from devserve.servers import Outcome, ThreadedServer


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


def test_accepting_resumes_when_held_idle_connections_expire(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "MAX_HELD", 2)
    monkeypatch.setattr(servers, "IDLE_CONNECTION_TIMEOUT", 0.2)
    server._set_accepting(True)
    address = server.address
    idle = [socket.create_connection(address) for _ in range(2)]
    pump(server, lambda: len(server._waiting) == 2)
    pump(server, lambda: not server._accepting)  # the cap: the rest waits in the backlog
    late = socket.create_connection(address)
    try:
        # The idle ones expire; the listener comes back and the late client is served.
        assert get(server, late).startswith(b"HTTP/1.1 200")
    finally:
        for connection in (*idle, late):
            connection.close()


def test_the_cap_of_held_connections_holds_within_one_accept_batch(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "MAX_HELD", 3)
    server._set_accepting(True)
    clients = [socket.create_connection(server.address) for _ in range(6)]
    try:
        pump(server, lambda: len(server._waiting) == 3)
        for _ in range(20):
            server._step(0.01)
        assert len(server._waiting) == 3
    finally:
        for connection in clients:
            connection.close()
