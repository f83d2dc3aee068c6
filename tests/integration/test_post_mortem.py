"""--dev pdb: a post-mortem debugger on the terminal, driven through a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devserve.errors import ExitCode
from tests.integration.harness import APPS, Response, devserve_command, run_cli


class Terminal:
    """devserve with a pseudo-terminal as stdin, stdout and stderr."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.popen = subprocess.Popen(
            [*devserve_command(), *args],
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.output = ""

    def read_until(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.output)):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} on the terminal; it shows:\n{self.output}"
            if select.select([self.master], [], [], remaining)[0]:
                try:
                    self.output += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the other side closed
                    raise AssertionError(f"terminal closed; it showed:\n{self.output}") from None
        return match

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        os.close(self.master)


def get_in_background(port: int) -> tuple[threading.Thread, list[int]]:
    """A GET / on ``port`` in a thread (pdb holds it while the test types), and the list
    its answer's status goes into."""
    import http.client

    statuses: list[int] = []

    def get() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/")
            statuses.append(connection.getresponse().status)
        finally:
            connection.close()

    client = threading.Thread(target=get)
    client.start()
    return client, statuses


@pytest.fixture
def terminal(env: dict[str, str]) -> Iterator[Terminal]:
    started = Terminal(["-p", "0", "--dev", "pdb", "slowapp:broken_app"], APPS, env)
    yield started
    started.close()


def test_an_exception_opens_pdb_on_the_terminal(terminal: Terminal) -> None:
    import http.client

    port = int(terminal.read_until(r"serving on http://127\.0\.0\.1:(\d+)").group(1))
    answers: list[Response | BaseException] = []

    def get() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            answers.append(Response(response.status, dict(response.getheaders()), b""))
        except OSError as error:
            answers.append(error)
        finally:
            connection.close()

    client = threading.Thread(target=get)
    client.start()
    terminal.read_until(r"RuntimeError in GET /: boom from broken_app")
    terminal.read_until(r"\(Pdb\) ")
    assert not answers  # the request waits while the developer looks
    terminal.type("p local_answer")
    terminal.read_until(r"\n42\r?\n")
    terminal.type("c")
    client.join(15)
    assert len(answers) == 1 and isinstance(answers[0], Response), answers
    assert answers[0].status == 500


def test_pdb_without_a_terminal_is_refused(env: dict[str, str]) -> None:
    result = run_cli(["-p", "0", "--dev", "pdb", "slowapp:app"], cwd=APPS, env=env)
    assert result.returncode == ExitCode.CONFIG
    [line] = result.stderr.strip().splitlines()
    assert "--dev pdb needs a terminal" in line and "--dev werkzeug" in line


def test_time_limits_stand_aside_while_pdb_holds_a_request(env: dict[str, str]) -> None:
    args = ["-p", "0", "--dev", "pdb", "--limit-time-real", "1", "slowapp:broken_app"]
    terminal = Terminal(args, APPS, env)
    try:
        port = int(terminal.read_until(r"serving on http://127\.0\.0\.1:(\d+)").group(1))
        client, statuses = get_in_background(port)
        terminal.read_until(r"\(Pdb\) ")
        # Three limit checks go by while the developer looks: none may cut the request.
        with pytest.raises(AssertionError):
            terminal.read_until(r"--limit-time-real", timeout=3.0)
        terminal.type("c")
        client.join(15)
        assert statuses == [500]
        assert "reloaded in" not in terminal.output
    finally:
        terminal.close()
