"""--dev werkzeug: the interactive debugger, driven through its own HTTP protocol."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import re
import signal
import socket
from pathlib import Path

import pytest

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import APPS, DevserveProcess, run_cli, wait_reloads, write_file

PIN = "123-456-789"
HTML = {"Accept": "text/html"}
ANSWER = '<span class="number">42</span>'  # the console's output for `local_answer`


def traceback_page(server: DevserveProcess) -> tuple[str, str]:
    """The debugger page of the failing route: (its secret, the innermost frame's id)."""
    page = server.request("/", headers=HTML)
    assert page.status == 500
    secret = re.search(r'SECRET = "([^"]+)"', page.text)
    frames = re.findall(r'id="frame-(\d+)"', page.text)
    assert secret and frames, page.text[:2000]
    return secret.group(1), frames[-1]


def command(
    server: DevserveProcess,
    secret: str,
    frame: str,
    expression: str,
    cookie: str = "",
    host: str | None = None,
) -> tuple[int, str]:
    headers = {"Cookie": cookie} if cookie else {}
    if host:
        headers["Host"] = host
    query = f"/?__debugger__=yes&cmd={expression}&frm={frame}&s={secret}"
    response = server.request(query, headers=headers)
    return response.status, response.text


def unlock(server: DevserveProcess, secret: str, pin: str) -> tuple[dict[str, bool], str]:
    response = server.request(f"/?__debugger__=yes&cmd=pinauth&pin={pin}&s={secret}")
    cookie = response.headers.get("Set-Cookie", "").split(";")[0]
    return json.loads(response.text), cookie


def start_debugger(devserve: StartDevserve, *extra: str) -> DevserveProcess:
    return devserve(
        "-p",
        "0",
        "--dev",
        "werkzeug",
        "--debugger-pin",
        PIN,
        *extra,
        "slowapp:broken_app",
        cwd=APPS,
    )


def test_traceback_page_has_a_console_and_the_pin_is_in_the_banner(
    devserve: StartDevserve,
) -> None:
    server = start_debugger(devserve)
    assert f"debugger PIN: {PIN}" in server.log
    page = server.request("/", headers=HTML)
    assert page.status == 500
    assert "boom from broken_app" in page.text
    assert "EVALEX = true" in page.text and "SECRET = " in page.text
    assert 'class="traceback"' in page.text


def test_the_console_runs_code_only_after_the_pin(devserve: StartDevserve) -> None:
    server = start_debugger(devserve)
    secret, frame = traceback_page(server)
    status, output = command(server, secret, frame, "local_answer")
    assert status == 500 and ANSWER not in output  # locked: the app answered, not the console

    verdict, _ = unlock(server, secret, "000-000-000")
    assert verdict["auth"] is False
    verdict, cookie = unlock(server, secret, PIN)
    assert verdict["auth"] is True and cookie

    status, output = command(server, secret, frame, "local_answer", cookie)
    assert status == 200 and ANSWER in output


def test_untrusted_host_is_refused_and_a_trusted_one_allowed(devserve: StartDevserve) -> None:
    server = start_debugger(devserve)
    secret, frame = traceback_page(server)
    _, cookie = unlock(server, secret, PIN)
    status, output = command(server, secret, frame, "local_answer", cookie, host="mydev.test")
    assert status == 400 and ANSWER not in output  # Werkzeug's SecurityError

    trusting = start_debugger(devserve, "--debugger-trusted-host", "mydev.test")
    secret, frame = traceback_page(trusting)
    _, cookie = unlock(trusting, secret, PIN)
    status, output = command(trusting, secret, frame, "local_answer", cookie, host="mydev.test")
    assert status == 200 and ANSWER in output


def test_debugger_on_a_network_interface_is_refused(env: dict[str, str]) -> None:
    result = run_cli(
        ["-p", "0", "--http-interface", "0.0.0.0", "--dev", "werkzeug", "slowapp:app"],
        cwd=APPS,
        env=env,
    )
    assert result.returncode == ExitCode.CONFIG
    [line] = result.stderr.strip().splitlines()
    assert "run code through the debugger console" in line and "--debugger-allow-remote" in line


def test_debugger_on_a_network_interface_when_allowed(devserve: StartDevserve) -> None:
    server = devserve(
        "-p",
        "0",
        "--http-interface",
        "0.0.0.0",
        "--dev",
        "werkzeug",
        "--debugger-allow-remote",
        "slowapp:app",
        cwd=APPS,
        ready=False,
    )
    server.wait_for_log("serving on http://0.0.0.0:")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == ExitCode.OK


def test_debugger_on_an_adopted_network_socket_is_refused(
    devserve: StartDevserve, env: dict[str, str]
) -> None:
    import shutil

    from tests.integration.harness import devserve_command

    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate (Debian package systemd) is needed"
    with socket.socket() as probe:  # a port for the activator to bind, on every interface
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    server = devserve(
        "--dev",
        "werkzeug",
        "--debugger-pin",
        "off",
        "slowapp:broken_app",
        cwd=APPS,
        command=[activate, "-l", f"0.0.0.0:{port}", *devserve_command()],
        ready=False,
    )
    server.wait_for_log(f"Listening on 0.0.0.0:{port}")
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # starts devserve
        with contextlib.suppress(ConnectionResetError):  # it exits with us in the backlog
            answer = client.recv(65536)
    assert b"EVALEX" not in answer  # never served the console
    assert server.wait_exit() == ExitCode.CONFIG
    assert "devserve: error: --dev werkzeug on a socket listening on 0.0.0.0" in server.log
    assert "--debugger-allow-remote" in server.log and "Traceback" not in server.log


@pytest.mark.usefixtures("reload_mode")
def test_the_pin_lockout_survives_a_reload(devserve: StartDevserve) -> None:
    server = devserve(
        "-p",
        "0",
        "--dev",
        "reload,werkzeug",
        "--debugger-pin",
        PIN,
        "slowapp:broken_app",
        cwd=APPS,
    )
    secret, _frame = traceback_page(server)
    # Ten wrong PINs at once (each answer is held 0.5 s, or 5 s after the sixth).
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        verdicts = list(pool.map(lambda _: unlock(server, secret, "000-000-000")[0], range(10)))
    assert not any(verdict["auth"] for verdict in verdicts)
    assert unlock(server, secret, PIN)[0] == {"auth": False, "exhausted": True}
    server.signal(signal.SIGHUP)
    wait_reloads(server, 1)
    secret, _frame = traceback_page(server)
    assert unlock(server, secret, PIN)[0] == {"auth": False, "exhausted": True}


def test_the_console_works_on_an_ipv6_loopback(devserve: StartDevserve) -> None:
    server = devserve(
        "-p",
        "0",
        "--http-interface",
        "::1",
        "--dev",
        "werkzeug",
        "--debugger-pin",
        "off",
        "slowapp:broken_app",
        cwd=APPS,
    )
    connection = http.client.HTTPConnection("::1", server.port, timeout=10)
    try:
        connection.request("GET", "/", headers={**HTML, "Host": f"[::1]:{server.port}"})
        page = connection.getresponse().read().decode()
    finally:
        connection.close()
    assert "EVALEX = true" in page and "EVALEX_TRUSTED = true" in page


BROKEN = """\
def app(environ, start_response):
    local_answer = 6 * 7  # noqa: F841
    raise RuntimeError("boom, version {version}")
"""


@pytest.mark.usefixtures("reload_mode")
def test_a_page_from_before_a_reload_says_so(devserve: StartDevserve, tmp_path: Path) -> None:
    module = tmp_path / "brokenmod.py"
    module.write_text(BROKEN.format(version=1))
    server = devserve(
        "-p",
        "0",
        "--dev",
        "reload,werkzeug",
        "--debugger-pin",
        PIN,
        "brokenmod:app",
        cwd=tmp_path,
    )
    server.wait_for_log("watching")
    secret, frame = traceback_page(server)
    write_file(module, BROKEN.format(version=2))
    wait_reloads(server, 1)
    status, output = command(server, secret, frame, "local_answer")
    assert status == 410
    assert "The server was reloaded" in output and "Reload this page" in output


@pytest.mark.parametrize("pin", ["off"])
def test_pin_off_opens_the_console(devserve: StartDevserve, pin: str) -> None:
    server = devserve(
        "-p", "0", "--dev", "werkzeug", "--debugger-pin", pin, "slowapp:broken_app", cwd=APPS
    )
    assert "debugger PIN: off" in server.log
    secret, frame = traceback_page(server)
    status, output = command(server, secret, frame, "local_answer")
    assert status == 200 and ANSWER in output
