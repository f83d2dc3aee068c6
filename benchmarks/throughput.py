"""Requests per second: devserve (threaded) against Werkzeug's ``run_simple(threaded=True)``.

Both serve the same hello-world app (``benchmarks/apps/hello.py``) in their own subprocess,
with the per-request log silenced the same way (level WARNING), and are loaded in turn by
``wrk`` over 127.0.0.1: one warm-up run each (discarded), then alternating rounds
(A B A B ...). The median of each server's rounds is reported, and their ratio.

Both servers close the connection after every response (Werkzeug always sends
``Connection: close``), so every request is a new TCP connection for both.

Run with the Python that has devserve installed, from the repository root::

    python benchmarks/throughput.py --duration 5 --rounds 3 --connections 4

Exits 0 whatever the ratio (this is a measurement); 1 if it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from processes import HOST, free_port, spawn, stop

APPS_DIR = Path(__file__).resolve().parent / "apps"
APP_MODULE = "hello"  # benchmarks/apps/hello.py, imported with APPS_DIR as the cwd
READY_TIMEOUT = 20.0  # seconds a server gets to start listening
WARMUP_SECONDS = 2
WRK_INSTALL_HINT = (
    "wrk is not installed; install it with 'apt-get install wrk' (Debian/Ubuntu) "
    "or 'brew install wrk' (macOS)"
)

# Werkzeug's own server, its request log silenced like devserve's --log-level warning.
WERKZEUG_RUNNER = f"""\
import logging, sys
from werkzeug.serving import run_simple
from {APP_MODULE} import app
logging.getLogger("werkzeug").setLevel(logging.WARNING)
run_simple({HOST!r}, int(sys.argv[1]), app, threaded=True)
"""


class BenchmarkError(Exception):
    """The benchmark could not measure; the message says why."""


@dataclasses.dataclass
class Server:
    """A server under test: how to start it on a port, and the figures measured for it."""

    name: str
    command: Callable[[int], list[str]]
    rounds: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0  # wrk socket errors and non-2xx/3xx responses, over all rounds

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    errors: int


def devserve_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "devserve",
        f"{APP_MODULE}:app",
        "-p",
        str(port),
        "--log-level",
        "warning",
    ]


def werkzeug_command(port: int) -> list[str]:
    return [sys.executable, "-c", WERKZEUG_RUNNER, str(port)]


# --- servers ---


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
    """Poll the port until it accepts a connection; fail if the server exits or is late."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise BenchmarkError(
                f"the server exited with code {process.returncode} before listening:\n" + tail(log)
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the server was not listening after {READY_TIMEOUT:g}s")
        time.sleep(0.05)  # polling interval, not synchronisation


def tail(log: IO[bytes], lines: int = 20) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode(errors="replace").rstrip()
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


@contextlib.contextmanager
def running(server: Server) -> Iterator[int]:
    """Start the server in its own process group; yield its port once it listens."""
    port = free_port()
    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as home:
        process = spawn(server.command(port), APPS_DIR, home, log)
        try:
            try:
                wait_until_listening(process, port, log)
            except BenchmarkError as error:
                raise BenchmarkError(f"{server.name}: {error}") from None
            yield port
            if process.poll() is not None:
                raise BenchmarkError(
                    f"{server.name} exited with code {process.returncode} during the run:\n"
                    + tail(log)
                )
        finally:
            stop(process)


# --- load ---


def run_wrk(port: int, seconds: int, connections: int) -> WrkResult:
    command = [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{seconds}s",
        "--timeout",
        "5s",
        f"http://{HOST}:{port}/",
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"wrk did not finish within {seconds + 30}s") from None
    if completed.returncode != 0:
        raise BenchmarkError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_wrk(completed.stdout)


def parse_wrk(output: str) -> WrkResult:
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise BenchmarkError(f"cannot read wrk's output:\n{output}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(count) for count in socket_errors.groups())
    bad_status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad_status:
        errors += int(bad_status.group(1))
    return WrkResult(float(rate.group(1)), errors)


def measure(servers: list[Server], ports: dict[str, int], args: argparse.Namespace) -> None:
    for server in servers:  # warm-up, discarded
        run_wrk(ports[server.name], min(WARMUP_SECONDS, args.duration), args.connections)
    for number in range(1, args.rounds + 1):
        for server in servers:
            result = run_wrk(ports[server.name], args.duration, args.connections)
            server.rounds.append(result.requests_per_second)
            server.errors += result.errors
            print(
                f"  round {number}/{args.rounds} {server.name:<9} "
                f"{result.requests_per_second:10.1f} req/s",
                file=sys.stderr,
                flush=True,
            )


# --- report ---


def report(servers: list[Server]) -> str:
    header = f"{'server':<10} {'median req/s':>12}   rounds"
    lines = [header, "-" * len(header)]
    for server in servers:
        rounds = "  ".join(f"{rate:.1f}" for rate in server.rounds)
        lines.append(f"{server.name:<10} {server.median:>12.1f}   {rounds}")
    for server in servers:
        if server.errors:
            lines.append(f"warning: {server.name}: {server.errors} socket errors or bad responses")
    devserve, werkzeug = servers
    if werkzeug.median <= 0:
        raise BenchmarkError("werkzeug served no requests")
    ratio = devserve.median / werkzeug.median
    lines.append(f"ratio devserve/werkzeug = {ratio:.2f} (target >= 1.0)")
    return "\n".join(lines)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--duration", type=positive_int, default=5, help="seconds per round (default: 5)"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="rounds per server (default: 3)"
    )
    parser.add_argument(
        "--connections",
        type=positive_int,
        default=4,
        help="concurrent wrk connections, one wrk thread (default: 4)",
    )
    return parser.parse_args(argv)


def check_requirements() -> None:
    if shutil.which("wrk") is None:
        raise BenchmarkError(WRK_INSTALL_HINT)
    for module in ("devserve", "werkzeug"):
        if importlib.util.find_spec(module) is None:
            raise BenchmarkError(
                f"{module} is not importable by {sys.executable}; run this script with the "
                "Python of the virtualenv devserve is installed in"
            )


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    servers = [Server("devserve", devserve_command), Server("werkzeug", werkzeug_command)]
    try:
        check_requirements()
        print(
            f"wrk: 1 thread, {args.connections} connections, {args.duration}s x {args.rounds} "
            f"rounds per server, alternating, after a {WARMUP_SECONDS}s warm-up each; "
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.ExitStack() as stack:
            ports = {server.name: stack.enter_context(running(server)) for server in servers}
            measure(servers, ports, args)
        print(report(servers))
    except BenchmarkError as error:
        print(f"throughput: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("throughput: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
