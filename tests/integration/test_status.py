"""The status endpoint and ``devserve status/reload/stop``, on the real CLI: the keys and
their types, a reload in ``reloads`` with its file, a slow request in ``in_flight``, prefork's
workers, the answer while 50 requests are in flight, and the commands against threaded and
prefork servers. The loopback rule is in ``tests/unit/test_livereload.py`` (peers other than
loopback cannot be made with traffic on loopback)."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    DevserveProcess,
    assert_one_line_error,
    run_cli,
    wait_reloads,
    wait_until,
    wait_watching,
    write_file,
)

STATUS = "/__devserve__/status"


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    shutil.copy(APPS / "slowapp.py", folder / "slowapp.py")
    return folder


def status_of(server: DevserveProcess) -> dict[str, Any]:
    answer = server.request(STATUS)
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    return dict(json.loads(answer.body))


@pytest.fixture
def slow_requests() -> Iterator[Any]:
    """Start GETs of a slow path in threads; every one is joined after the test."""
    threads: list[threading.Thread] = []

    def start(server: DevserveProcess, count: int, seconds: float) -> None:
        for _ in range(count):
            thread = threading.Thread(
                target=server.request, args=(f"/slow?seconds={seconds}",), kwargs={"timeout": 30}
            )
            thread.start()
            threads.append(thread)

    yield start
    for thread in threads:
        thread.join(30)


def test_the_status_keys_and_their_types(devserve: StartDevserve, app_folder: Path) -> None:
    server = devserve("-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    wait_watching(server)
    found = status_of(server)
    assert found["pid"] == server.pid  # the process started: a warm parent's, seen from its child
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", found["version"])
    assert found["mode"] == "threaded (warm reload)"
    assert found["target"] == "slowapp:app"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*\+00:00", found["started_at"])
    assert isinstance(found["uptime_s"], (int, float)) and 0 <= found["uptime_s"] < 60
    assert isinstance(found["image"], str) and found["image"]
    assert found["reloads"] == []
    watching = found["watching"]
    assert watching["roots"] == [str(app_folder)]
    assert watching["backend"] == "inotify"
    assert isinstance(watching["folders"], int) and watching["folders"] >= 1
    assert watching["polled"] == []
    assert found["error"] is None
    assert found["in_flight"] == [] and found["workers"] == []
    assert isinstance(found["caches"], list)
    assert "status: " in server.log  # the banner names it


def test_a_reload_shows_in_the_status_with_its_file(
    devserve: StartDevserve, app_folder: Path, reload_mode: str
) -> None:
    server = devserve("-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    wait_watching(server)
    first = status_of(server)["image"]
    module = app_folder / "slowapp.py"
    for number in (1, 2):
        write_file(module, module.read_text(encoding="utf-8") + f"\nEDIT = {number}\n")
        wait_reloads(server, number)
    found = status_of(server)
    assert found["image"] != first
    assert len(found["reloads"]) == 2  # remembered across images
    last = found["reloads"][-1]
    assert last["paths"] == [str(module)] and last["cause"] == "slowapp.py"
    assert last["kind"] == reload_mode
    step = "load" if reload_mode == "warm" else "restart"
    assert set(last["ms"]) == {"settle", "drain", step, "total"}
    assert all(isinstance(ms, int) and ms >= 0 for ms in last["ms"].values())
    parts = sum(ms for name, ms in last["ms"].items() if name != "total")
    assert abs(last["ms"]["total"] - parts) <= 2  # each rounded on its own
    logged = re.findall(r"reloaded in (\d+) ms", server.log)
    assert abs(int(logged[-1]) - last["ms"]["total"]) <= 1


def test_a_slow_request_is_in_flight(
    devserve: StartDevserve, app_folder: Path, slow_requests: Any
) -> None:
    server = devserve("-p", "0", "--status", "slowapp:app", cwd=app_folder)
    slow_requests(server, 1, 3)

    def running() -> list[dict[str, Any]]:
        return list(status_of(server)["in_flight"])

    [request] = wait_until(running, 10, "the slow request in the status")
    assert request["method"] == "GET" and request["path"] == "/slow?seconds=3"
    assert request["client"] == "127.0.0.1" and 0 <= request["age_s"] < 3
    assert status_of(server)["mode"] == "threaded"  # no --dev: no warm parent


def test_the_status_answers_while_50_requests_are_in_flight(
    devserve: StartDevserve, app_folder: Path, slow_requests: Any
) -> None:
    server = devserve("-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    slow_requests(server, 50, 4)

    def all_in_flight() -> dict[str, Any] | None:
        found = status_of(server)
        return found if len(found["in_flight"]) == 50 else None

    found = wait_until(all_in_flight, 10, "50 requests in flight")
    assert {request["path"] for request in found["in_flight"]} == {"/slow?seconds=4"}


def test_prefork_lists_its_workers_and_their_requests(
    devserve: StartDevserve, app_folder: Path, slow_requests: Any
) -> None:
    import psutil

    server = devserve("-p", "0", "--dev", "reload", "--workers", "2", "slowapp:app", cwd=app_folder)
    for _ in range(4):
        server.request("/")

    def counted() -> list[dict[str, Any]] | None:
        """The workers, once the 4 requests are counted: a worker writes its count just
        after its response has left."""
        found = status_of(server)
        workers = [worker for worker in found["workers"] if worker["kind"] == "http"]
        return workers if sum(worker["requests"] or 0 for worker in workers) >= 4 else None

    workers = wait_until(counted, 10, "the 4 requests counted")
    assert sorted(worker["number"] for worker in workers) == [1, 2]
    master = psutil.Process(server.pid)
    master_pids = {master.pid, *(child.pid for child in master.children())}
    for worker in workers:
        process = psutil.Process(worker["pid"])
        assert process.ppid() in master_pids  # the master's (or the warm parent's) child
        assert worker["rss_mib"] > 1 and worker["age_s"] >= 0
    slow_requests(server, 1, 3)
    [request] = wait_until(lambda: status_of(server)["in_flight"], 10, "the slow request")
    assert request["path"] == "/slow?seconds=3"


# --- the commands ---


def test_devserve_status_against_threaded_and_prefork(
    devserve: StartDevserve, app_folder: Path, env: dict[str, str]
) -> None:
    threaded = devserve("-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    pidfile = app_folder / "prefork.pid"
    prefork = devserve(
        "-p",
        "0",
        "--status",
        "--workers",
        "2",
        "--pidfile",
        str(pidfile),
        "slowapp:app",
        cwd=app_folder,
    )
    shown = run_cli(["status", "-p", str(threaded.port)], cwd=app_folder, env=env)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"pid\s+{threaded.pid}\b", shown.stdout)
    assert "threaded (warm reload)" in shown.stdout and "requests in flight: none" in shown.stdout
    shown = run_cli(["status", "--pidfile", str(pidfile)], cwd=app_folder, env=env)
    assert shown.returncode == 0, shown.stderr
    workers = [w for w in status_of(prefork)["workers"] if w["kind"] == "http"]
    for worker in workers:
        assert re.search(rf"^{worker['pid']}\s+{worker['number']}\s+http", shown.stdout, re.M)
    raw = run_cli(["status", "-p", str(prefork.port), "--json"], cwd=app_folder, env=env)
    assert json.loads(raw.stdout)["mode"] == "prefork, 2 workers"


def test_devserve_status_says_in_one_line_why_nothing_answers(
    devserve: StartDevserve, app_folder: Path, env: dict[str, str]
) -> None:
    plain = devserve("-p", "0", "slowapp:app", cwd=app_folder)  # no --dev, no --status
    result = run_cli(["status", "-p", str(plain.port)], cwd=app_folder, env=env)
    assert_one_line_error(result, 1, "not with devserve's status", "--status")
    plain.stop()
    result = run_cli(["status", "-p", str(plain.port)], cwd=app_folder, env=env)
    assert_one_line_error(result, 1, "nothing answers", "connection refused")
    missing = app_folder / "none.pid"
    result = run_cli(["reload", "--pidfile", str(missing)], cwd=app_folder, env=env)
    assert_one_line_error(result, 1, "no pidfile")


def test_devserve_reload_returns_once_the_new_code_serves_and_stop_once_it_ended(
    devserve: StartDevserve, app_folder: Path, env: dict[str, str], reload_mode: str
) -> None:
    server = devserve("-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    before = status_of(server)["image"]
    result = run_cli(["reload", "-p", str(server.port)], cwd=app_folder, env=env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"reloaded in \d+ ms: process {server.pid} serves image \S+\n", result.stdout
    )
    after = status_of(server)  # at once: the new image serves already
    assert after["image"] != before and after["image"] in result.stdout
    assert after["reloads"][-1]["cause"] == "SIGHUP"
    started = time.monotonic()
    result = run_cli(["stop", "-p", str(server.port)], cwd=app_folder, env=env)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"stopped in \d+ ms: process {server.pid}\n", result.stdout)
    assert server.wait_exit(1) == 0  # ended already: reaped at once
    assert time.monotonic() - started < 15


def test_gevent_mode_status_lists_the_greenlets_requests(
    devserve: StartDevserve, app_folder: Path, slow_requests: Any
) -> None:
    server = devserve("gevent", "-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    slow_requests(server, 3, 3)

    def three() -> dict[str, Any] | None:
        found = status_of(server)
        return found if len(found["in_flight"]) == 3 else None

    found = wait_until(three, 10, "3 requests in flight")
    assert found["mode"] == "gevent (warm reload)"
    assert {request["path"] for request in found["in_flight"]} == {"/slow?seconds=3"}


VERSIONED = """\
VERSION = "v0"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]
"""


def test_devserve_reload_of_prefork_returns_once_its_workers_serve_the_new_code(
    devserve: StartDevserve, tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "versioned.py").write_text(VERSIONED, encoding="utf-8")
    server = devserve("-p", "0", "--status", "--workers", "2", "versioned:app", cwd=tmp_path)
    assert server.request("/").text == "v0"
    # No watcher: HUP. (A longer file: Python trusts a .pyc of the same size and second.)
    write_file(tmp_path / "versioned.py", VERSIONED.replace("v0", "v1 grown"))
    result = run_cli(["reload", "-p", str(server.port)], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    answers = [server.request("/").text for _ in range(6)]
    assert answers == ["v1 grown"] * 6, (answers, result.stdout)  # every worker


def test_devserve_reload_says_when_the_new_code_does_not_load(
    devserve: StartDevserve, app_folder: Path, env: dict[str, str]
) -> None:
    server = devserve("-p", "0", "--dev", "reload", "slowapp:app", cwd=app_folder)
    wait_watching(server)
    module = app_folder / "slowapp.py"
    write_file(module, module.read_text(encoding="utf-8") + "\ndef broken(:\n")
    server.wait_for_log("not reloading, syntax error")  # refused: the old code serves
    assert status_of(server)["error"]["line"] == module.read_text().count("\n")
    result = run_cli(["reload", "-p", str(server.port)], cwd=app_folder, env=env)
    line = assert_one_line_error(result, 1, "reloaded, but its new code does not serve")
    assert "SyntaxError" in line and "slowapp.py, line" in line


def test_a_stale_pidfile_gets_no_process_signalled(
    devserve: StartDevserve, tmp_path: Path, env: dict[str, str]
) -> None:
    import subprocess

    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        pidfile = tmp_path / "stale.pid"
        pidfile.write_text(f"{other.pid}\n")
        for command in ("stop", "reload"):
            result = run_cli([command, "--pidfile", str(pidfile)], cwd=tmp_path, env=env)
            assert result.returncode == 1 and "Traceback" not in result.stderr
        assert other.poll() is None  # never signalled
        pidfile.write_text("1\n")
        result = run_cli(["stop", "--pidfile", str(pidfile)], cwd=tmp_path, env=env)
        assert_one_line_error(result, 1, "no PID devserve could have")
    finally:
        other.kill()
        other.wait()
    bad_port = {**env, "DEVSERVE_HTTP_PORT": "abc"}
    result = run_cli(["status"], cwd=tmp_path, env=bad_port)
    assert_one_line_error(result, 2, "DEVSERVE_HTTP_PORT='abc'", "-p PORT")
