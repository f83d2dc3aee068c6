"""INT/TERM stop gracefully; a second one forces; the pidfile and --stop-after-init."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    EXAMPLE_ADDONS,
    DevserveProcess,
    Response,
    run_cli,
    wait_until,
)


def _start_request(
    server: DevserveProcess, path: str
) -> tuple[threading.Thread, list[Response | OSError]]:
    """Send a request from a thread; its response (or the error, when the server cuts it
    short) lands in the returned list."""
    results: list[Response | OSError] = []

    def send() -> None:
        try:
            results.append(server.request(path, timeout=30))
        except OSError as error:  # includes http.client's RemoteDisconnected
            results.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    return thread, results


def _wait_running(server: DevserveProcess, path: str) -> None:
    """Until the app is inside ``path``: slowapp touches $SLOWAPP_STARTED then."""
    marker = Path(server.env["SLOWAPP_STARTED"])
    wait_until(marker.exists, timeout=10, what=f"{path} to be running")


def start_slowapp(devserve: StartDevserve, tmp_path: Path, *args: str) -> DevserveProcess:
    return devserve(
        "-p",
        "0",
        *args,
        "slowapp:app",
        cwd=APPS,
        env_extra={"SLOWAPP_STARTED": str(tmp_path / "slow-started")},
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_lets_the_running_request_finish(
    devserve: StartDevserve, tmp_path: Path, signum: int
) -> None:
    server = start_slowapp(devserve, tmp_path)
    thread, results = _start_request(server, "/slow?seconds=1")
    _wait_running(server, "/slow")

    server.signal(signum)
    server.wait_for_log(r"stopping: waiting up to 5s for 1 running request")
    with pytest.raises(ConnectionRefusedError):  # no longer accepting
        socket.create_connection((server.host, server.port), timeout=5).close()

    assert server.wait_exit() == ExitCode.OK
    thread.join(10)
    assert len(results) == 1 and isinstance(results[0], Response), results
    assert results[0].status == 200 and results[0].text == "slept 1.0"
    assert "stopped" in server.log


def test_idle_server_stops_at_once(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", str(EXAMPLE_ADDONS))
    # An idle connection (a browser's preconnect) must not hold the stop up.
    idle = socket.create_connection((server.host, server.port), timeout=5)
    try:
        server.wait_for_log("serving on")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=4) == ExitCode.OK
        assert time.monotonic() - started < 3
    finally:
        idle.close()


def test_second_signal_forces_the_stop(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_slowapp(devserve, tmp_path)
    thread, results = _start_request(server, "/slow?seconds=20")
    _wait_running(server, "/slow")

    server.signal(signal.SIGINT)
    server.wait_for_log("press CTRL-C again")
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait_exit(timeout=5) == ExitCode.FORCED
    assert time.monotonic() - started < 4
    assert "forced stop: 1 request(s) cut short" in server.log
    thread.join(30)
    assert len(results) == 1 and isinstance(results[0], OSError), results


def test_grace_period_bounds_the_wait(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_slowapp(devserve, tmp_path, "--shutdown-grace", "0.5")
    thread, results = _start_request(server, "/slow?seconds=20")
    _wait_running(server, "/slow")

    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=10) == ExitCode.OK
    assert time.monotonic() - started < 5
    assert "still running after the 0.5s grace period" in server.log
    thread.join(30)
    assert len(results) == 1 and isinstance(results[0], OSError), results


def test_pidfile_written_and_removed(devserve: StartDevserve, tmp_path: Path) -> None:
    pidfile = tmp_path / "devserve.pid"
    server = devserve("-p", "0", "--pidfile", str(pidfile), str(EXAMPLE_ADDONS))
    assert pidfile.read_text().strip() == str(server.pid)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == ExitCode.OK
    assert not pidfile.exists()


def test_stop_after_init_loads_and_exits(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_cli(["-p", "0", "--stop-after-init", str(EXAMPLE_ADDONS)], cwd=tmp_path, env=env)
    assert result.returncode == ExitCode.OK, result.stderr
    assert "serving on" not in result.stderr
    assert "stopping after init" in result.stderr


def test_stop_after_init_reports_a_broken_addon(tmp_path: Path, env: dict[str, str]) -> None:
    addon = tmp_path / "addons" / "broken"
    addon.mkdir(parents=True)
    (addon / "__manifest__.py").write_text("{'name': 'Broken', 'version': '1'}")
    (addon / "__init__.py").write_text("from . import missing_module\n")
    result = run_cli(["--stop-after-init", str(tmp_path / "addons")], cwd=tmp_path, env=env)
    assert result.returncode == ExitCode.APP_LOAD
    assert "addon 'broken' failed to import" in result.stderr
    assert "Traceback" not in result.stderr
