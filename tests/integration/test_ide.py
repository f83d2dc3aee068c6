"""devserve as IDEs start it: under debugpy (VS Code), the README's run configurations,
the stop button; on the real CLI. (Interpreter options across a reload: test_reload.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import StartDevserve
from tests.integration.harness import APPS, devserve_command, wait_reloads, wait_until
from tests.integration.test_post_mortem import Terminal
from tests.integration.test_prefork import group_gone
from tests.integration.test_reload import make_addons, set_version, version_of

README = Path(__file__).resolve().parents[2] / "README.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dap_initialize(port: int) -> dict[str, object]:
    """Connect to a debug adapter and complete a DAP ``initialize``: its response."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        request = {
            "seq": 1,
            "type": "request",
            "command": "initialize",
            "arguments": {"clientID": "devserve-tests", "adapterID": "debugpy"},
        }
        body = json.dumps(request).encode()
        connection.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while True:  # events may come first: read messages until the response
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                assert chunk, "the adapter closed the connection"
                received += chunk
            head, _, received = received.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head, re.I)[1])  # type: ignore[index]
            while len(received) < length:
                chunk = connection.recv(65536)
                assert chunk, "the adapter closed the connection"
                received += chunk
            message, received = json.loads(received[:length]), received[length:]
            if message.get("type") == "response":
                return message  # type: ignore[no-any-return]


def test_reloads_under_debugpy_stay_debuggable(devserve: StartDevserve, tmp_path: Path) -> None:
    addons = make_addons(tmp_path)
    port = free_port()
    debugpy = [sys.executable, "-m", "debugpy", "--listen", f"127.0.0.1:{port}", "-m", "devserve"]
    server = devserve(
        "-p", "0", "--dev", "reload", "--limit-time-real", "1", str(addons), command=debugpy
    )
    server.wait_for_log("watching", timeout=30)
    assert dap_initialize(port)["success"] is True
    for number in range(1, 6):
        set_version(addons / "demo", f"v{number + 1}")
        wait_reloads(server, number, timeout=30)
        assert version_of(server) == f"v{number + 1}"
        response = wait_until(lambda: _initialized(port), 15, "the debug adapter to listen")
        assert response["command"] == "initialize" and response["success"] is True
    # Under a debugger the time limits are off: a breakpoint may hold a request for long.
    assert server.request("/slow/1.5", timeout=10).text == "slow v6"
    assert "ran past" not in server.log
    assert server.popen.poll() is None  # one process throughout, re-exec'd in place


def _initialized(port: int) -> dict[str, object] | None:
    try:
        return dap_initialize(port)
    except OSError:
        return None  # not listening yet


def _readme_block(language: str, marker: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in the README."""
    text = README.read_text()
    after = text[text.index(f"<!-- {marker} -->") :]
    match = re.search(rf"```{language}\n(.*?)```", after, re.S)
    assert match, f"no {language} block after the {marker} marker"
    return match[1]


def test_the_readme_vs_code_configuration_runs(devserve: StartDevserve, tmp_path: Path) -> None:
    """The launch.json entry, run as VS Code runs it without the debugger: ``python -m
    <module> <args>`` in ``cwd`` (the workspace folder: here, a copy of its addons)."""
    entry = json.loads(_readme_block("json", "vscode-launch"))["configurations"][0]
    assert entry["module"] == "devserve" and entry["cwd"] == "${workspaceFolder}"
    workspace = tmp_path / "workspace"
    make_addons(workspace)  # workspace/addons/demo
    args = [arg.replace("examples/addons", "addons") for arg in entry["args"]]
    args = [arg if arg != "8069" else "0" for arg in args]
    server = devserve(*args, command=[sys.executable, "-m", "devserve"], cwd=workspace)
    server.wait_for_log("watching")
    assert version_of(server) == "v1"
    set_version(workspace / "addons" / "demo", "v2")
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_the_readme_pycharm_configuration_runs(devserve: StartDevserve, tmp_path: Path) -> None:
    """The run configuration's fields: module name, parameters, working directory."""
    fields = dict(
        line.split(":", 1) for line in _readme_block("text", "pycharm-run").strip().splitlines()
    )
    fields = {name.strip(): value.strip() for name, value in fields.items()}
    assert fields["Module name"] == "devserve"
    workspace = tmp_path / "project"
    make_addons(workspace)
    parameters = fields["Parameters"].replace("examples/addons", "addons").split()
    parameters = [item if item != "8069" else "0" for item in parameters]
    server = devserve(*parameters, command=[sys.executable, "-m", "devserve"], cwd=workspace)
    server.wait_for_log("watching")
    set_version(workspace / "addons" / "demo", "v2")
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("mode", [[], ["--workers", "2"]], ids=["threaded", "prefork"])
def test_the_stop_button_leaves_no_process(
    devserve: StartDevserve, tmp_path: Path, mode: list[str], signum: int
) -> None:
    """PyCharm's stop sends INT to the process it started, VS Code's TERM and then KILL:
    whichever comes, nothing of devserve is left running (a worker whose master is killed
    notices within a second and exits)."""
    addons = make_addons(tmp_path)
    server = devserve("-p", "0", "--dev", "reload", *mode, str(addons))
    server.wait_for_log("watching")
    assert version_of(server) == "v1"
    os.kill(server.pid, signum)  # the process, not its group: as an IDE does
    server.popen.wait(timeout=10)
    wait_until(lambda: group_gone(server.pid), 5, "every process of the group to end")


ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@pytest.mark.parametrize(
    ("terminal", "extra", "coloured"),
    [
        (True, {}, True),
        (True, {"NO_COLOR": "1"}, False),
        (False, {}, False),
        (False, {"FORCE_COLOR": "1"}, True),
    ],
    ids=["tty", "tty-NO_COLOR", "no-tty", "no-tty-FORCE_COLOR"],
)
def test_colours_only_on_a_terminal_unless_told(
    env: dict[str, str], terminal: bool, extra: dict[str, str], coloured: bool
) -> None:
    """rich's banner and colours on a terminal; plain lines in an IDE console (no TTY);
    NO_COLOR and FORCE_COLOR win."""
    import subprocess

    environment = {k: v for k, v in env.items() if k != "NO_COLOR"}
    environment.update(extra, TERM="xterm-256color", COLUMNS="100")
    args = ["-p", "0", "--stop-after-init", "slowapp:app"]
    if terminal:
        tty = Terminal(args, APPS, environment)  # the post-mortem tests' pseudo-terminal
        try:
            tty.read_until("stopping after init")
            assert tty.popen.wait(30) == 0
            output = tty.output
        finally:
            tty.close()
    else:
        result = subprocess.run(
            [*devserve_command(), *args],
            cwd=APPS,
            env=environment,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        output = result.stderr
    assert "loaded slowapp:app" in output
    assert bool(ANSI_COLOUR.search(output)) is coloured, repr(output)
    if not terminal and not coloured:  # an IDE console: greppable plain lines
        assert re.search(r"^\d{4}-\d\d-\d\d [\d:,]+ \d+ INFO devserve", output, re.M), output
