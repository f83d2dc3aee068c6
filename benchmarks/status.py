"""The status endpoint under load: how long ``GET /__devserve__/status`` takes while the
server is busy, against a request to the app under the same load.

devserve serves ``benchmarks/apps/reloadapp`` (``/`` answers at once, ``/slow`` after 2 s)
on 127.0.0.1 with ``--status``, in each mode (threaded, ``--workers 2``), in its own process
group, with its log silenced. Under load:

* ``wrk`` (1 thread, 4 connections) hammers ``/`` for the whole measurement;
* threaded mode also has 50 requests to ``/slow`` in flight at all times (each ended one is
  started again), so 50 request threads are busy in the app;

the benchmark then times ``--samples`` requests of each kind, alternating, each on a new
connection: ``GET /__devserve__/status`` (and checks it lists the slow requests) and
``GET /``. Prints p50/p90/max of each, their ratio, and the target: status p50 <= 50 ms.

    python benchmarks/status.py [--samples 100] [--modes threaded,prefork]

Needs ``wrk`` on the PATH. Exits 0 whatever the figures; 1 when it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from processes import HOST, free_port, spawn, stop
from reload import percentile

APPS = Path(__file__).resolve().parent / "apps"
MODES = {"threaded": [], "prefork": ["--workers", "2"]}
SLOW_IN_FLIGHT = {"threaded": 50, "prefork": 0}  # prefork's 2 workers would all be asleep
TARGET = 0.050
READY_TIMEOUT = 20.0


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(port, "/", 1.0)[0] == 200:
                return
        time.sleep(0.05)
    raise SystemExit(f"devserve did not serve on port {port} within {READY_TIMEOUT:g}s")


@contextlib.contextmanager
def slow_requests(port: int, count: int) -> Iterator[None]:
    """``count`` requests to /slow in flight while inside: each one ended starts again."""
    stopping = threading.Event()

    def keep_one() -> None:
        while not stopping.is_set():
            with contextlib.suppress(OSError, http.client.HTTPException):
                get(port, "/slow", 10.0)

    threads = [threading.Thread(target=keep_one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stopping.set()
        for thread in threads:
            thread.join(12)


@contextlib.contextmanager
def wrk(port: int, seconds: int) -> Iterator[None]:
    """wrk hammering / for ``seconds`` (longer than the measurement)."""
    process = subprocess.Popen(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", f"http://{HOST}:{port}/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # under way
        yield
    finally:
        process.terminate()
        process.wait(10)


def timed(port: int, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    status, body = get(port, path)
    took = time.perf_counter() - started
    if status != 200:
        raise SystemExit(f"GET {path} answered {status}")
    return took, body


def measure(mode: str, samples: int, scratch: Path) -> dict[str, list[float]]:
    port = free_port()
    command = [sys.executable, "-m", "devserve", "-p", str(port), "--status"]
    command += ["--log-level", "warning", *MODES[mode], "reloadapp.app:app"]
    with open(scratch / f"{mode}.log", "wb") as log:
        server = spawn(command, APPS, scratch, log)
        try:
            wait_ready(port)
            slow = SLOW_IN_FLIGHT[mode]
            times: dict[str, list[float]] = {"status": [], "app": []}
            with slow_requests(port, slow), wrk(port, 5 + samples // 10):
                deadline = time.monotonic() + 10
                while slow and time.monotonic() < deadline:  # the slow ones running first
                    found = json.loads(timed(port, "/__devserve__/status")[1])
                    if len(found["in_flight"]) >= slow:
                        break
                    time.sleep(0.05)
                seen = 0
                for _ in range(samples):
                    took, body = timed(port, "/__devserve__/status")
                    times["status"].append(took)
                    seen = max(seen, len(json.loads(body)["in_flight"]))
                    times["app"].append(timed(port, "/")[0])
                    time.sleep(0.01)
            print(f"{mode}: the status listed up to {seen} requests in flight")
            return times
        finally:
            stop(server)


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--modes", default=",".join(MODES))
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install wrk)", file=sys.stderr)
        return 1
    results = {}
    with tempfile.TemporaryDirectory(prefix="devserve-status-") as scratch:
        for mode in options.modes.split(","):
            results[mode] = measure(mode, options.samples, Path(scratch))
    print(f"{'(ms, under load)':<34} {'p50':>6} {'p90':>6} {'max':>6}")
    for mode, times in results.items():
        for kind in ("status", "app"):
            values = times[kind]
            figures = (percentile(values, 0.5), percentile(values, 0.9), max(values))
            label = f"{mode}: GET {'/__devserve__/status' if kind == 'status' else '/'}"
            print(f"{label:<34} " + " ".join(f"{ms(f):>6}" for f in figures))
    for mode, times in results.items():
        ours, app = percentile(times["status"], 0.5), percentile(times["app"], 0.5)
        if ours is None or not app:
            continue
        verdict = "met" if ours <= TARGET else "NOT MET"
        print(
            f"{mode}: status p50 {ms(ours)} ms (target <= {TARGET * 1000:.0f}): {verdict}; "
            f"status / app p50: {ours / app:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
