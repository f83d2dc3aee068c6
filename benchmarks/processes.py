"""Process helpers the benchmarks share: every server runs in its own process group on
loopback and is stopped, with everything it started, whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import psutil  # a dependency of devserve

HOST = "127.0.0.1"
STOP_TIMEOUT = 5.0  # seconds a server gets to exit after SIGTERM before SIGKILL


def free_port() -> int:
    """A port free on HOST right now. (devserve prints the port it picked with -p 0 only at
    level INFO, which the benchmarks silence, so the port is chosen here.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def server_env(home: str | Path) -> dict[str, str]:
    """Our environment without DEVSERVE_* settings, with an empty HOME (no ~/.devserverc),
    no colours, and unbuffered output (so a server's last words reach its log)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEVSERVE_")}
    # Servers run with bytecode caches, as users have them: a shell that sets this variable
    # would make each start recompile code that has no .pyc yet (an editable install's).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("FORCE_COLOR", None)
    env.update(HOME=str(home), NO_COLOR="1", PYTHONUNBUFFERED="1")
    return env


def spawn(
    command: list[str],
    cwd: str | Path,
    home: str | Path,
    log: IO[bytes],
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group (so Ctrl-C goes to us, and the caller stops
    it with stop() in a `finally`), with server_env(home) (and `env_extra`) and its output
    in `log`."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**server_env(home), **(env_extra or {})},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group: TERM, then KILL if it lingers (or on Ctrl-C).
    Descendants seen before the TERM that outlive the leader are killed one by one."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)  # it leads its own group (start_new_session)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:  # not reaped yet, so its group id is still its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for leftover in descendants:
            with contextlib.suppress(psutil.Error):
                if leftover.is_running():  # is_running() also rules out a reused PID
                    leftover.kill()
