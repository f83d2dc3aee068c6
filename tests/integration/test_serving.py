"""The real CLI serves the example addons and plain WSGI apps."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from pathlib import Path

from tests.integration.conftest import StartDevserve
from tests.integration.harness import APPS, EXAMPLE_ADDONS, Response


def test_example_addons_page_converter_and_static(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", str(EXAMPLE_ADDONS))

    page = server.request("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<h1>Hello from devserve</h1>" in page.text

    assert server.request("/hello/repeat/3").text == "hello\n" * 3
    assert server.request("/hello/repeat/three").status == 404  # <int:count> rejects it
    assert "Hello, world!" in server.request("/hello/world").text

    css = server.request("/hello/static/hello.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert css.headers["X-Content-Type-Options"] == "nosniff"
    assert css.body == (EXAMPLE_ADDONS / "hello" / "static" / "hello.css").read_bytes()

    assert server.request("/hello/static/../__manifest__.py").status == 404
    assert server.request("/no/such/page").status == 404


def test_banner_names_address_mode_target_dev_and_pid(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "--dev", "reload,werkzeug", str(EXAMPLE_ADDONS))
    log = server.log
    assert f"serving on http://127.0.0.1:{server.port}" in log
    assert "mode: threaded" in log
    assert f"serving: addons in {EXAMPLE_ADDONS}" in log
    assert "dev: reload,werkzeug" in log
    assert f"pid: {server.pid}" in log


def test_request_log_line(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", str(EXAMPLE_ADDONS))
    server.request("/hello/repeat/2")
    server.wait_for_log(r'devserve\.access: 127\.0\.0\.1 "GET /hello/repeat/2 HTTP/1\.1" 200 ')


def test_wsgi_app_by_module_and_attribute(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "slowapp:app", cwd=APPS)
    assert server.request("/").text == "ok"
    assert "serving: slowapp:app" in server.log


def test_wsgi_app_from_a_factory_call(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "slowapp:create_app('made by a factory')", cwd=APPS)
    assert server.request("/").text == "made by a factory"


def test_package_wsgi_module_in_current_directory(devserve: StartDevserve, tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'mypkg says hi']\n"
    )
    server = devserve("-p", "0", "mypkg.wsgi:app", cwd=tmp_path)
    assert server.request("/anything").text == "mypkg says hi"


def test_python_dash_m_devserve(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", str(EXAMPLE_ADDONS), command=[sys.executable, "-m", "devserve"])
    assert server.request("/hello/repeat/1").text == "hello\n"


def test_settings_from_config_file_and_environment(devserve: StartDevserve, tmp_path: Path) -> None:
    config = tmp_path / "devserve.conf"
    config.write_text(f"[options]\naddons_path = {EXAMPLE_ADDONS}\nhttp_port = 1\n")
    # The environment beats the file's port 1, which would need privileges.
    server = devserve("-c", str(config), env_extra={"DEVSERVE_HTTP_PORT": "0"})
    assert server.port not in (0, 1)
    assert server.request("/hello/repeat/1").status == 200


def test_default_config_file_in_home(devserve: StartDevserve, env: dict[str, str]) -> None:
    Path(env["HOME"], ".devserverc").write_text(
        f"[options]\naddons_path = {EXAMPLE_ADDONS}\nhttp_port = 0\n"
    )
    server = devserve()
    assert server.request("/").status == 200


def test_save_writes_a_private_file_without_dev(devserve: StartDevserve, tmp_path: Path) -> None:
    config = tmp_path / "saved.conf"
    server = devserve(
        "-c", str(config), "--save", "--dev", "reload", "-p", "0", str(EXAMPLE_ADDONS)
    )
    assert server.request("/").status == 200
    text = config.read_text()
    assert f"addons_path = {EXAMPLE_ADDONS}" in text
    assert "http_port = 0" in text
    assert "dev" not in text.replace("devserve", "")
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600


def test_max_http_threads_caps_concurrent_requests(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "--max-http-threads", "1", "slowapp:app", cwd=APPS)
    responses = _concurrently(server, ["/slow?seconds=0.3"] * 3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert server.request("/stats").text == "max_concurrent=1"


def test_without_a_cap_requests_run_concurrently(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "slowapp:app", cwd=APPS)
    responses = _concurrently(server, ["/slow?seconds=0.5"] * 3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert server.request("/stats").text == "max_concurrent=3"


def _concurrently(server, paths: list[str]) -> list[Response]:  # type: ignore[no-untyped-def]
    results: list[Response | None] = [None] * len(paths)

    def fetch(index: int, path: str) -> None:
        results[index] = server.request(path)

    threads = [threading.Thread(target=fetch, args=item) for item in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(result is not None for result in results), "a request did not complete"
    return [result for result in results if result is not None]


def test_request_threads_are_pooled(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "slowapp:app", cwd=APPS)
    tasks = Path(f"/proc/{server.pid}/task")
    seen: set[str] = set()
    for _ in range(50):
        assert server.request("/").status == 200
        seen |= {task.name for task in tasks.iterdir()}
    # A few pooled threads served all 50 connections (the client may get its answer just
    # before the thread is back in the pool, and the close of a kept-alive connection is
    # read by a thread too, so a few can appear); without a pool each one needs a new thread.
    assert len(seen) <= 8, seen


def test_idle_connections_hold_no_thread(devserve: StartDevserve) -> None:
    import socket

    server = devserve("-p", "0", "--max-http-threads", "2", "slowapp:app", cwd=APPS)
    idle = [socket.create_connection((server.host, server.port), timeout=5) for _ in range(10)]
    try:
        # Ten connections that send nothing (browser preconnects) leave both threads free.
        assert server.request("/", timeout=5).text == "ok"
        assert [r.status for r in _concurrently(server, ["/slow?seconds=0.2"] * 2)] == [200, 200]
    finally:
        for connection in idle:
            connection.close()


def test_sys_exit_in_the_app_is_a_500_and_the_thread_comes_back(
    devserve: StartDevserve,
) -> None:
    server = devserve("-p", "0", "--max-http-threads", "1", "slowapp:app", cwd=APPS)
    assert server.request("/exit").status == 500
    assert "SystemExit: 3" in server.log
    assert server.request("/", timeout=5).text == "ok"  # the one thread serves on
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=5) == 0
    assert "still running" not in server.log


def test_a_big_unread_body_does_not_reset_the_response(devserve: StartDevserve) -> None:
    """The app answers without reading a 20 MB body; devserve skips 1 MiB of it, then
    closes. The client, still sending, must get the whole response, not a reset."""
    import socket

    server = devserve("-p", "0", "slowapp:app", cwd=APPS)
    body = b"x" * (20 << 20)
    head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    for _ in range(5):
        with socket.create_connection((server.host, server.port), timeout=10) as client:
            client.sendall(head + body)  # all of it first, as curl does
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok"), answer[:200]
