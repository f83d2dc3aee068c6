"""Run the real devserve CLI in a subprocess and talk to it.

:class:`DevserveProcess` starts ``devserve`` in its own process group with its output in a log
file (never a pipe nobody reads), waits for conditions against deadlines (never a bare sleep),
and kills the whole group when done. Every integration test, in this issue and later ones,
goes through it.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ADDONS = REPO / "examples" / "addons"
APPS = Path(__file__).resolve().parent / "apps"
READY = re.compile(r"serving on (http://(\S+):(\d+))")
LIVE_RELOAD_TAG = re.compile(
    rb'<script src="/__devserve__/client\.js" data-image="[^"]*" defer></script>'
)


def without_live_tag(body: bytes) -> bytes:
    """A body without live reload's script tag (``--dev reload`` writes it into HTML
    pages): what the app sent, which most tests compare."""
    return LIVE_RELOAD_TAG.sub(b"", body)


class WaitTimeout(AssertionError):
    pass


def wait_until(
    condition: Callable[[], T | None], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def console_script(name: str) -> list[str]:
    """The installed console script ``name`` next to this interpreter, else
    ``python -m name``."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


def devserve_command() -> list[str]:
    return console_script("devserve")


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without DEVSERVE_* settings, with HOME isolated (no stray
    ~/.devserverc) and colours off so logs are plain lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSERVE_")}
    # PYTHONDONTWRITEBYTECODE goes too: users have .pyc caches, and reloads must cope.
    for name in (
        "FORCE_COLOR",
        "PYTEST_ADDOPTS",
        "COVERAGE_PROCESS_START",
        "PYTHONDONTWRITEBYTECODE",
    ):
        env.pop(name, None)
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.update(extra or {})
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def raw(self) -> str:
        """The body as text, as it was served."""
        return self.body.decode("utf-8", "replace")

    @property
    def text(self) -> str:
        """The body as text, without live reload's script tag: what the app sent."""
        return without_live_tag(self.body).decode("utf-8", "replace")


class DevserveProcess:
    """One devserve process group, its log file, and helpers to drive it."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        log_path: Path,
        env: Mapping[str, str],
        command: Sequence[str] | None = None,
    ) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log_path
        self._log_file = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            [*(command or devserve_command()), *self.args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one in stop()
        )
        self.url = ""
        self.host = ""
        self.port = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the log (from offset ``after``); fails early if
        the process exits first."""
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = regex.search(self.log, after)
            if match is None and self.popen.poll() is not None:
                match = regex.search(self.log, after)
                if match is None:
                    raise AssertionError(
                        f"devserve exited ({self.popen.returncode}) before logging "
                        f"{pattern!r}; log:\n{self.log}"
                    )
            return match

        return wait_until(found, timeout, f"log line {pattern!r}")

    def wait_ready(self, timeout: float = 15.0) -> DevserveProcess:
        match = self.wait_for_log(READY.pattern, timeout)
        self.url, self.host, self.port = match.group(1), match.group(2), int(match.group(3))
        return self

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Response:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Response(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(
                f"devserve did not exit within {timeout}s; log:\n{self.log}"
            ) from None

    def stop(self) -> None:
        """Kill the whole process group, whatever state it is in."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self._log_file.close()


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *fragments: str
) -> str:
    """The run ended with ``code`` and one ``devserve: error:`` line holding ``fragments``
    on stderr, and no traceback anywhere; returns that line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("devserve: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def start_in(folder: Path, args: Sequence[str], cwd: Path) -> DevserveProcess:
    """A ready devserve with its home and log in ``folder``, for a module-scoped fixture
    (the ``devserve`` fixture is per test); the caller stops it."""
    home = folder / "home"
    home.mkdir()
    process = DevserveProcess(args, cwd=cwd, log_path=folder / "devserve.log", env=clean_env(home))
    try:
        return process.wait_ready()
    except BaseException:
        process.stop()
        raise


def run_cli(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 30.0,
    command: Sequence[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run devserve (or ``command``, which starts it) to completion, for commands that exit
    by themselves."""
    return subprocess.run(
        [*(command or devserve_command()), *args],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def write_addon(
    root: Path,
    name: str,
    manifest: str | None = None,
    init: str = "",
    files: dict[str, str] | None = None,
) -> Path:
    """An addon folder ``root/name``; ``files`` maps paths in it to their (dedented) text."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(init)
    (folder / "__manifest__.py").write_text(manifest or "{'version': '1.0'}")
    for relative, text in (files or {}).items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(textwrap.dedent(text))
    return folder


RELOADED = r"reloaded in \d+ ms \((?:warm|exec)\): "


def write_file(path: Path, text: str, *, atomic: bool = False) -> None:
    """Save like an editor: in place (truncate and write) or atomically (write a temporary
    file next to it, then rename it over the original)."""
    if atomic:
        temporary = path.with_name(f".{path.name}.tmp-save")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    else:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)


def happens_within(condition: Callable[[], object], seconds: float) -> bool:
    """Whether ``condition`` comes true within ``seconds``: for what must not happen."""
    try:
        wait_until(condition, seconds, "a condition")
    except AssertionError:
        return False
    return True


def count_reloads(process: DevserveProcess) -> int:
    return len(re.findall(RELOADED, process.log))


def wait_reloads(process: DevserveProcess, count: int, timeout: float = 15.0) -> None:
    """Until the log shows ``count`` reloads in all."""
    wait_until(lambda: count_reloads(process) >= count, timeout, f"{count} reload(s) in the log")
    assert count_reloads(process) == count, process.log


def wait_watching(process: DevserveProcess, images: int = 1, timeout: float = 15.0) -> None:
    """Until the ``images``-th process image (1 + the reloads so far) has its watches set."""
    wait_until(
        lambda: len(re.findall(r"watching .* \(ready in", process.log)) >= images,
        timeout,
        f"image {images} to watch",
    )
