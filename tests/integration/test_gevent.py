"""Gevent mode on the real CLI: ``devserve gevent`` (patched first, on every image), many
slow requests at once, greenlets in QUIT dumps, reloads that keep the socket, connections and
in-flight requests, and prefork's ``--gevent-port`` evented child (spawned, respawned after
``kill -9``, restarted on reload, stopped with the master, gone when the master dies)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    DevserveProcess,
    count_reloads,
    run_cli,
    wait_reloads,
    wait_until,
    wait_watching,
    write_file,
)
from tests.integration.test_bad_input import assert_one_line_error

CHILD_TITLE = "devserve: evented child"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A copy of the test app, so reload tests can edit it."""
    folder = tmp_path / "app"
    folder.mkdir()
    shutil.copy(APPS / "geventapp.py", folder / "geventapp.py")
    return folder


def stats(host: str, port: int) -> dict[str, Any]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/stats")
        return json.loads(connection.getresponse().read())  # type: ignore[no-any-return]
    finally:
        connection.close()


def get(host: str, port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def set_version(app_dir: Path, version: str) -> None:
    source = (app_dir / "geventapp.py").read_text()
    lines = [
        f'VERSION = "{version}"' if line.startswith("VERSION =") else line
        for line in source.splitlines()
    ]
    write_file(app_dir / "geventapp.py", "\n".join(lines) + "\n")


@pytest.fixture
def background() -> Iterator[list[threading.Thread]]:
    """Threads a test starts; joined (bounded) at the end whatever happens."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(20)


def start_in_background(threads: list[threading.Thread], target: Any) -> None:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    threads.append(thread)


# --- gevent mode ---


def test_gevent_mode_serves_patched_from_the_start(devserve: StartDevserve, app_dir: Path) -> None:
    server = devserve("gevent", "-p", "0", "geventapp:app", cwd=app_dir)
    assert server.request("/").text == "v1"
    info = stats(server.host, server.port)
    assert info["patched"] is True and info["pid"] == server.pid
    assert "mode: gevent" in server.log
    assert "MonkeyPatchWarning" not in server.log  # nothing was imported before the patching


def test_200_slow_requests_complete_together(
    devserve: StartDevserve, app_dir: Path, background: list[threading.Thread]
) -> None:
    server = devserve("gevent", "-p", "0", "geventapp:app", cwd=app_dir)
    statuses: list[int] = []
    lock = threading.Lock()

    def slow() -> None:
        status, _ = get(server.host, server.port, "/sleep?s=2", timeout=30)
        with lock:
            statuses.append(status)

    started = time.monotonic()
    for _ in range(200):
        start_in_background(background, slow)
    wait_until(lambda: len(statuses) == 200, 25, "200 slow responses")
    took = time.monotonic() - started
    assert statuses == [200] * 200
    assert stats(server.host, server.port)["most"] == 200  # all in the app at once
    assert took < 15, f"200 two-second requests took {took:.1f}s: served one after another?"


def test_quit_dumps_greenlets_with_their_request(
    devserve: StartDevserve, app_dir: Path, background: list[threading.Thread]
) -> None:
    server = devserve("gevent", "-p", "0", "geventapp:app", cwd=app_dir)
    start_in_background(background, lambda: get(server.host, server.port, "/sleep?s=4"))
    wait_until(lambda: stats(server.host, server.port)["running"] == 1, 10, "the slow request")
    server.signal(signal.SIGQUIT)
    server.wait_for_log(r"greenlets of process \d+")
    dump = server.log.split("greenlets of process")[1]
    assert "GET /sleep?s=4 from 127.0.0.1, running for" in dump
    assert "in app" in dump and "time.sleep(seconds)" in dump  # the request's own stack
    assert "stacks of process" in server.log  # the threads, as in threaded mode
    assert server.request("/").status == 200  # the dump did not disturb serving


def test_usr1_reports_caches_in_gevent_mode(devserve: StartDevserve) -> None:
    server = devserve("gevent", "-p", "0", "cacheapp:app", cwd=APPS)
    assert server.request("/square?n=3").text == "9"
    server.signal(signal.SIGUSR1)
    server.wait_for_log(r"caches of process \d+")
    server.wait_for_log(r"cacheapp\.square")


@pytest.mark.parametrize("mode", ["warm", "exec"])
def test_reload_keeps_the_socket_and_finishes_in_flight_requests(
    devserve: StartDevserve, app_dir: Path, background: list[threading.Thread], mode: str
) -> None:
    server = devserve(
        "gevent", "-p", "0", "--dev", "reload", "--reload-mode", mode, "geventapp:app", cwd=app_dir
    )
    wait_watching(server)
    slow: list[tuple[int, bytes]] = []
    start_in_background(
        background, lambda: slow.append(get(server.host, server.port, "/sleep?s=2"))
    )
    wait_until(lambda: stats(server.host, server.port)["running"] == 1, 10, "the slow request")
    # A kept-alive connection, idle across the reload, is handed to the next image.
    kept = http.client.HTTPConnection(server.host, server.port, timeout=10)
    kept.request("GET", "/")
    assert kept.getresponse().read() == b"v1"
    local = kept.sock.getsockname()
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                status, _ = get(server.host, server.port, "/")
                if status != 200:
                    failures.append(f"status {status}")
            except OSError as error:
                failures.append(repr(error))

    for _ in range(3):
        start_in_background(background, hammer)
    try:
        set_version(app_dir, "v2")
        wait_reloads(server, 1)
        wait_until(lambda: get(server.host, server.port, "/")[1] == b"v2", 10, "the new code")
        server.signal(signal.SIGHUP)
        wait_reloads(server, 2)
    finally:
        stop.set()
    assert slow == [(200, b"slept")]  # finished by the image it started in
    kept.request("GET", "/")
    assert kept.getresponse().read() == b"v2"
    assert kept.sock.getsockname() == local  # the same connection, served by a new image
    kept.close()
    assert failures == []
    serving = stats(server.host, server.port)["pid"]
    if mode == "exec":
        assert serving == server.pid  # in place
    else:  # a child of the warm parent, the process the user started
        assert psutil.Process(serving).ppid() == server.pid
        assert "reloaded in" in server.log and "(warm): geventapp.py" in server.log
    assert stats(server.host, server.port)["patched"] is True  # the new image patched too


def test_broken_code_keeps_serving_in_gevent_mode(devserve: StartDevserve, app_dir: Path) -> None:
    server = devserve("gevent", "-p", "0", "--dev", "reload", "geventapp:app", cwd=app_dir)
    wait_watching(server)
    source = (app_dir / "geventapp.py").read_text()
    write_file(app_dir / "geventapp.py", source + "\ndef broken(:\n")
    server.wait_for_log(r"not reloading, syntax error in .*geventapp\.py")
    assert server.request("/").text == "v1"
    assert count_reloads(server) == 0
    write_file(app_dir / "geventapp.py", source.replace('"v1"', '"v3"'))
    wait_reloads(server, 1)
    assert server.request("/").text == "v3"


def test_term_lets_the_running_request_finish(
    devserve: StartDevserve, app_dir: Path, background: list[threading.Thread]
) -> None:
    server = devserve("gevent", "-p", "0", "geventapp:app", cwd=app_dir)
    slow: list[tuple[int, bytes]] = []
    start_in_background(
        background, lambda: slow.append(get(server.host, server.port, "/sleep?s=1.5"))
    )
    wait_until(lambda: stats(server.host, server.port)["running"] == 1, 10, "the slow request")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == ExitCode.OK
    assert slow == [(200, b"slept")]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=2).close()


def test_gevent_refuses_workers(env: dict[str, str]) -> None:
    result = run_cli(["gevent", "--workers", "2", "geventapp:app"], cwd=APPS, env=env)
    assert_one_line_error(result, ExitCode.CONFIG, "cannot take --workers")


def test_gevent_missing_says_how_to_install(env: dict[str, str]) -> None:
    hide = "import sys; sys.modules['gevent'] = None; from devserve.__main__ import main; "
    completed = run_cli(
        ["gevent", "geventapp:app"],
        cwd=APPS,
        env=env,
        command=[sys.executable, "-c", hide + "sys.exit(main())"],
    )
    assert_one_line_error(completed, ExitCode.CONFIG, "pip install 'devserve[gevent]'")


def long_polls(host: str, port: int, count: int, seconds: float) -> list[bytes]:
    """``count`` requests to /sleep held at once, each on its own connection (one thread,
    non-blocking sockets): the first bytes each one got back, once all were answered."""
    import resource
    import selectors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 512)), hard))
    selector = selectors.DefaultSelector()
    answers: dict[socket.socket, bytes] = {}
    try:
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(b"GET /sleep?s=%g HTTP/1.1\r\nHost: x\r\n\r\n" % seconds)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            answers[sock] = b""
        deadline = time.monotonic() + seconds + 20
        pending = set(answers)
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(1.0):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except (BlockingIOError, ConnectionResetError):
                    data = b""
                answers[sock] += data
                selector.unregister(sock)
                pending.discard(sock)
        return list(answers.values())
    finally:
        for sock in answers:
            sock.close()
        selector.close()


@pytest.mark.parametrize("where", ["gevent", "evented-child"])
def test_more_than_1024_long_polls_are_all_answered(
    devserve: StartDevserve, app_dir: Path, background: list[threading.Thread], where: str
) -> None:
    """Connections on descriptors past 1024 (no select() anywhere), and a quick request
    answered meanwhile."""
    if where == "gevent":
        server = devserve("gevent", "-p", "0", "geventapp:app", cwd=app_dir)
        host, port = server.host, server.port
    else:
        server, port = start_with_child(devserve, app_dir)
        host = "127.0.0.1"
    answers: list[bytes] = []
    start_in_background(background, lambda: answers.extend(long_polls(host, port, 1100, 3)))
    wait_until(lambda: stats(host, port)["running"] >= 1000, 20, "1000 long-polls in the app")
    started = time.monotonic()
    assert get(host, port, "/")[0] == 200
    assert time.monotonic() - started < 1.0
    wait_until(lambda: len(answers) == 1100, 40, "the long-polls to end")
    assert all(answer.startswith(b"HTTP/1.1 200 ") for answer in answers), {
        answer[:40] for answer in answers if not answer.startswith(b"HTTP/1.1 200 ")
    }
    assert "filedescriptor out of range" not in server.log


# --- prefork's evented child ---


def evented_children(master: int) -> list[int]:
    found = []
    for child in psutil.Process(master).children():
        try:
            if " ".join(part for part in child.cmdline() if part) == CHILD_TITLE:
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_with_child(devserve: StartDevserve, app_dir: Path) -> tuple[DevserveProcess, int]:
    port = free_port()
    server = devserve(
        "-p", "0", "--workers", "1", "--gevent-port", str(port), "geventapp:app", cwd=app_dir
    )
    server.wait_for_log(rf"evented child serving on http://127\.0\.0\.1:{port}")
    return server, port


def test_prefork_spawns_an_evented_child_on_the_gevent_port(
    devserve: StartDevserve, app_dir: Path
) -> None:
    server, port = start_with_child(devserve, app_dir)
    child = wait_until(lambda: evented_children(server.pid), 10, "the evented child")[0]
    info = stats("127.0.0.1", port)
    assert info["pid"] == child and info["patched"] is True
    assert stats(server.host, server.port)["patched"] is False  # the workers are not evented
    assert f"evented child on port {port}" in server.log


def test_evented_child_is_respawned_after_kill_9(devserve: StartDevserve, app_dir: Path) -> None:
    server, port = start_with_child(devserve, app_dir)
    first = wait_until(lambda: evented_children(server.pid), 10, "the evented child")[0]
    os.kill(first, signal.SIGKILL)
    server.wait_for_log(r"evented child died \(killed by signal SIGKILL\); starting another")
    second = wait_until(
        lambda: [pid for pid in evented_children(server.pid) if pid != first], 10, "a new child"
    )[0]
    wait_until(lambda: stats("127.0.0.1", port)["pid"] == second, 10, "the new child serving")


def test_master_reload_restarts_the_child_without_refusing(
    devserve: StartDevserve, app_dir: Path, background: list[threading.Thread]
) -> None:
    server, port = start_with_child(devserve, app_dir)
    first = wait_until(lambda: evented_children(server.pid), 10, "the evented child")[0]
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                get("127.0.0.1", port, "/")
            except OSError as error:
                failures.append(repr(error))

    start_in_background(background, hammer)
    try:
        set_version(app_dir, "v2-new")  # another size: no stale bytecode without a watcher
        server.signal(signal.SIGHUP)
        wait_reloads(server, 1)
        wait_until(lambda: get("127.0.0.1", port, "/")[1] == b"v2-new", 15, "the new code")
    finally:
        stop.set()
    assert first not in evented_children(server.pid)
    assert failures == []


def test_stopping_the_master_stops_the_child(devserve: StartDevserve, app_dir: Path) -> None:
    server, port = start_with_child(devserve, app_dir)
    child = wait_until(lambda: evented_children(server.pid), 10, "the evented child")[0]
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == ExitCode.OK
    wait_until(lambda: not psutil.pid_exists(child), 5, "the child gone")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_child_stops_when_its_master_is_killed(devserve: StartDevserve, app_dir: Path) -> None:
    server, _port = start_with_child(devserve, app_dir)
    child = wait_until(lambda: evented_children(server.pid), 10, "the evented child")[0]
    os.kill(server.pid, signal.SIGKILL)
    server.wait_exit(10)

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_until(gone, 10, "the orphaned child to stop")
    assert "is gone: stopping" in server.log
