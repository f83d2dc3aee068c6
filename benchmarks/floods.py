"""Floods: devserve against gunicorn, side by side in one run, under hostile loads.

Every server serves ``benchmarks/apps/longpoll.py`` (``/quick`` answers at once,
``/upload`` reads its body whole, ``/poll?seconds=S`` waits S seconds), one at a time, each
in its own process group on 127.0.0.1 with its request log silenced:

* devserve: ``python -m devserve -p PORT --log-level warning longpoll:app`` (threaded mode,
  its defaults: ``--limit-memory-hard 2560``, no ``--max-http-threads``);
* gunicorn-sync: ``python -m gunicorn -w 2 longpoll:app`` (its default worker);
* gunicorn-gthread: ``python -m gunicorn -w 1 -k gthread --threads 16 longpoll:app``;
* for the long-polls, the evented servers instead: ``python -m devserve gevent`` and
  ``python -m gunicorn -w 1 -k gevent``.

The floods, each against a fresh server (one thread of this process with non-blocking
sockets drives them; no thread per connection on this side):

* ``slow-bodies``: ``--slow-bodies`` clients send a whole ``POST /upload`` head with
  ``Content-Length: 100000``, then trickle the body, a byte per connection every 2 s;
* ``slowloris``: ``--slowloris`` clients send a request head a byte per connection every
  2 s, never ending it;
* ``idle-keep-alive``: ``--idle`` clients each get one ``/quick`` answer and keep their
  connection open, idle;
* ``long-polls`` (evented servers): ``--long-polls`` requests to ``/poll?seconds=30`` at once.

A flood is put in place within 20 s (a server whose backlog is full no longer takes
connections: the ``in`` column says how many got in). While it runs (``--window`` seconds),
a second client sends
``/quick`` on a new connection every 0.25 s (5 s timeout): p50 and max latency of those
answered 200, and how many failed (an error, a timeout, another status). Then: whether the
server process lived through it, its peak RSS (with its children) and threads, and the CPU
it used meanwhile (% of one core: a loop whose cost grows with the connections held burns
one under a slowloris flood).

Run with the Python of a virtualenv with devserve, gevent and gunicorn (the ``bench`` and
``gevent`` extras), from the repository root::

    pip install -e '.[bench,gevent]'
    python benchmarks/floods.py [--window 10] [--floods slowloris,long-polls]

Raises this process's descriptor limit to its maximum (the servers inherit it): the floods
need thousands. Exits 0 whatever the figures; 1 when devserve could not be measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import resource
import selectors
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil  # a dependency of devserve
from processes import HOST, free_port, spawn, stop
from reload import percentile

APPS = Path(__file__).resolve().parent / "apps"
READY_TIMEOUT = 30.0
PROBE_EVERY = 0.25
PROBE_TIMEOUT = 5.0
TRICKLE_EVERY = 2.0  # seconds between two bytes of each trickling connection
CONNECT_TIMEOUT = 0.5  # a server that no longer accepts: its backlog is full
SET_UP_TIME = 20.0  # seconds at most to put a flood in place (then it is what got in)


def devserve(evented: bool) -> Callable[[int], list[str]]:
    mode = ["gevent"] if evented else []
    return lambda port: [
        sys.executable,
        *("-m", "devserve", *mode, "-p", str(port), "--log-level", "warning", "longpoll:app"),
    ]


def gunicorn(*worker: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        *("-m", "gunicorn", *worker, "-b", f"{HOST}:{port}", "--log-level", "warning"),
        "longpoll:app",
    ]


THREADED = {
    "devserve": devserve(evented=False),
    "gunicorn-sync": gunicorn("-w", "2"),
    "gunicorn-gthread": gunicorn("-w", "1", "-k", "gthread", "--threads", "16"),
}
EVENTED = {
    "devserve-gevent": devserve(evented=True),
    "gunicorn-gevent": gunicorn("-w", "1", "-k", "gevent"),
}
FLOODS = ("slow-bodies", "slowloris", "idle-keep-alive", "long-polls")


@dataclasses.dataclass
class Result:
    flood: str
    server: str
    latencies: list[float] = dataclasses.field(default_factory=list)
    failures: int = 0
    survived: bool = True
    peak_rss: float = 0.0  # MiB
    peak_threads: int = 0
    cpu: float = 0.0  # the server's CPU use during the window, in % of one core
    flood_in: int = 0  # connections of the flood in place
    error: str = ""


# --- the flood ---


class Flood:
    """The flood's connections, driven by one thread: opened, their first bytes sent, then
    (trickling floods) a byte each every TRICKLE_EVERY seconds until stopped."""

    def __init__(self, kind: str, count: int, port: int) -> None:
        self.kind, self.count, self.port = kind, count, port
        self.socks: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._trickle, name="flood", daemon=True)

    def start(self) -> None:
        first = {
            "slow-bodies": b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx",
            "slowloris": b"GET /quick HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            "idle-keep-alive": b"GET /quick HTTP/1.1\r\nHost: x\r\n\r\n",
            "long-polls": b"GET /poll?seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n",
        }[self.kind]
        give_up = time.monotonic() + SET_UP_TIME
        for _ in range(self.count):
            if time.monotonic() > give_up:
                break
            try:
                sock = socket.create_connection((HOST, self.port), timeout=CONNECT_TIMEOUT)
                sock.sendall(first)
            except OSError:
                continue  # refused, reset or not accepted: the flood is what gets in
            self.socks.append(sock)
        if self.kind == "idle-keep-alive":
            self._read_answers()
        self.thread.start()

    def _read_answers(self) -> None:
        """Each idle connection reads its one answer: then it sits, kept alive."""
        selector = selectors.DefaultSelector()
        for sock in self.socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        pending = len(self.socks)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(1.0):
                with contextlib.suppress(OSError):
                    key.fileobj.recv(65536)  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
                pending -= 1
        selector.close()

    def _trickle(self) -> None:
        if self.kind not in ("slow-bodies", "slowloris"):
            return
        while not self.stopped.wait(TRICKLE_EVERY):
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.send(b"x")

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(TRICKLE_EVERY + 5)
        for sock in self.socks:
            sock.close()


# --- measuring ---


def probe(port: int) -> float | None:
    """Seconds for a /quick answer on a new connection; None when it failed."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT)
    try:
        connection.request("GET", "/quick")
        response = connection.getresponse()
        body = response.read()
        ok = response.status == 200 and body == b"quick\n"
    except (OSError, http.client.HTTPException):
        ok = False
    finally:
        connection.close()
    return time.perf_counter() - started if ok else None


def usage(pid: int) -> tuple[float, int, float]:
    """RSS (MiB, with children), threads and CPU seconds of the server's process tree."""
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree) / (1 << 20)
        cpu = sum(sum(p.cpu_times()[:2]) for p in tree)
        return rss, sum(p.num_threads() for p in tree), cpu
    except psutil.Error:
        return 0.0, 0, 0.0


def wait_ready(port: int) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if probe(port) is not None:
            return True
        time.sleep(0.05)
    return False


def measure(flood: str, server: str, command: list[str], count: int, window: float) -> Result:
    result = Result(flood, server)
    with (
        tempfile.TemporaryDirectory(prefix="devserve-floods-") as temp,
        open(Path(temp, "server.log"), "wb") as log,
    ):
        process = spawn(command, APPS, temp, log)
        attack = None
        try:
            port = _port(command)
            if not wait_ready(port):
                result.error = "not ready"
                return result
            attack = Flood(flood, count, port)
            attack.start()
            result.flood_in = len(attack.socks)
            began, (_, _, cpu_before) = time.monotonic(), usage(process.pid)
            while time.monotonic() < began + window:
                seconds = probe(port)
                if seconds is None:
                    result.failures += 1
                else:
                    result.latencies.append(seconds)
                rss, threads, cpu = usage(process.pid)
                result.peak_rss = max(result.peak_rss, rss)
                result.peak_threads = max(result.peak_threads, threads)
                time.sleep(PROBE_EVERY)
            result.cpu = 100 * (cpu - cpu_before) / (time.monotonic() - began)
            result.survived = process.poll() is None
        finally:
            if attack is not None:
                attack.stop()
            stop(process)
    return result


def _port(command: list[str]) -> int:
    if "-p" in command:
        return int(command[command.index("-p") + 1])
    return int(command[command.index("-b") + 1].rpartition(":")[2])


# --- report ---


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def report(results: list[Result]) -> None:
    print(
        f"{'flood':<16} {'server':<17} {'in':>6} {'p50 ms':>7} {'max ms':>7} {'failed':>6} "
        f"{'alive':>5} {'RSS MiB':>8} {'threads':>7} {'CPU %':>6}"
    )
    for r in results:
        if r.error:
            print(f"{r.flood:<16} {r.server:<17} {r.error}")
            continue
        p50 = percentile(r.latencies, 0.5)
        worst = max(r.latencies) if r.latencies else None
        print(
            f"{r.flood:<16} {r.server:<17} {r.flood_in:>6} {ms(p50):>7} {ms(worst):>7} "
            f"{r.failures:>6} {'yes' if r.survived else 'NO':>5} {r.peak_rss:>8.0f} "
            f"{r.peak_threads:>7} {r.cpu:>6.0f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds of probing")
    parser.add_argument("--slow-bodies", type=int, default=600)
    parser.add_argument("--slowloris", type=int, default=1500)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--long-polls", type=int, default=1100)
    parser.add_argument("--floods", default=",".join(FLOODS))
    parser.add_argument("--servers", default="", help="only these (comma-separated names)")
    options = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = {
        "slow-bodies": options.slow_bodies,
        "slowloris": options.slowloris,
        "idle-keep-alive": options.idle,
        "long-polls": options.long_polls,
    }
    wanted = set(filter(None, options.servers.split(",")))
    results = []
    for flood in filter(None, options.floods.split(",")):
        servers = EVENTED if flood == "long-polls" else THREADED
        for name, command in servers.items():
            if wanted and name not in wanted:
                continue
            print(f"{flood}: {name}...", file=sys.stderr)
            command_line = command(free_port())
            results.append(measure(flood, name, command_line, counts[flood], options.window))
    report(results)
    failed = any(r.server.startswith("devserve") and (r.error or not r.survived) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
