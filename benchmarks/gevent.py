"""Long-polling: devserve's gevent mode against its threaded mode, with 1,000 held requests.

Every mode serves ``benchmarks/apps/longpoll.py`` (``/poll?seconds=S`` answers after
``time.sleep(S)``: a cooperative wait under gevent mode's monkey-patching, a held thread in
threaded mode; ``/quick`` answers at once; ``/stats`` counts the requests inside ``/poll``),
one mode at a time, each in its own process group on 127.0.0.1, request log silenced:

* gevent: ``python -m devserve gevent -p PORT --log-level warning longpoll:app``;
* threaded: ``python -m devserve -p PORT --log-level warning longpoll:app`` (a thread per
  running request, no ``--max-http-threads`` cap: its default). Its default
  ``--limit-memory-hard`` (2560 MiB of address space, RLIMIT_AS) is what caps its threads:
  each reserves a stack of ``ulimit -s`` (8 MiB) and, for the first ones, a malloc arena;
* threaded-unlimited: the same with ``--limit-memory-hard 0``, to see what a thread per
  connection costs when nothing refuses it.

Per mode:

1. ``--connections`` long-poll requests (``/poll?seconds=HOLD``, ``Connection: close``) are
   sent at once on as many connections, by one thread of this process with non-blocking
   sockets and a selector (no thread or greenlet per connection on this side);
2. held: the app's own count of requests inside ``/poll`` (``/stats``), polled until all
   are in, or until a reading shows it has not grown for a second, or for half the hold at
   most; the app's peak is the figure;
3. then, while they are held, a second client sends ``--quick`` sequential ``/quick``
   requests, a new connection each (``http.client``, 5 s timeout): p50/p99/max latency of
   the ones answered 200 (nearest rank);
4. the RSS and VMS (address space) of the server, with any children, and its threads,
   sampled every 0.1 s from before the long-polls to their end: idle figures and peaks;
5. then the long-polls' answers: how many 200s, and what went wrong with the others.

Then gevent mode's targets (all the connections held at once; quick p99 < 50 ms meanwhile;
RSS < 150 MB), the ratios mode/gevent, and the ERROR, WARNING and Traceback lines of each
server's log (repeated lines once, with their count).

Run with the Python of the virtualenv devserve and gevent are installed in, from the
repository root (this file shadows the ``gevent`` package for scripts in this folder: no
benchmark imports gevent, and the servers run from ``benchmarks/apps``)::

    pip install '.[gevent]'
    python benchmarks/gevent.py [--connections 1000] [--hold 10] [--quick 200] \
        [--modes gevent,threaded,threaded-unlimited]

Exits 0 whatever the figures (this is a measurement); 1 if a mode could not be measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno
import http.client
import importlib.machinery
import json
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # a dependency of devserve
from prefork import problem_lines
from processes import HOST, free_port, spawn, stop
from reload import chosen, http_get, percentile, table, verdict
from throughput import BenchmarkError, positive_int

HERE = Path(__file__).resolve().parent
APPS_DIR = HERE / "apps"
TARGET = "longpoll:app"  # benchmarks/apps/longpoll.py, imported with APPS_DIR as the cwd
# mode -> devserve's command and options before the common ones
MODES = {
    "gevent": ["gevent"],
    "threaded": [],
    # Its default --limit-memory-hard (RLIMIT_AS, 2560 MiB) caps the threads it can start.
    "threaded-unlimited": ["--limit-memory-hard", "0"],
}
READY_TIMEOUT = 20.0  # seconds a server gets to answer /quick
STATS_EVERY = 0.05  # seconds between two looks at /stats while the long-polls come in
STALLED_AFTER = 1.0  # seconds without a new request inside /poll: the rest are not coming
QUICK_TIMEOUT = 5.0
ANSWER_GRACE = 30.0  # seconds past the hold the long-polls get to be answered
SAMPLE_EVERY = 0.1  # seconds between two samples of the server's RSS and threads
READ_SIZE = 4096
MiB = 1024 * 1024
TARGET_P99 = 0.050  # seconds
TARGET_RSS = 150e6 / MiB  # the 150 MB, in the MiB the figures are in (143)
SHOWN_PROBLEMS = 12  # distinct log lines shown per mode
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \d+ ")  # devserve's time, PID


def server_command(mode: str, port: int) -> list[str]:
    command = [sys.executable, "-m", "devserve", *MODES[mode]]
    return [*command, "-p", str(port), "--log-level", "warning", TARGET]


# --- figures ---


@dataclasses.dataclass
class PollCounts:
    """What the long-poll client saw."""

    sent: int = 0
    ok: int = 0  # 200 answers
    failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    first_answer: float | None = None  # time.perf_counter() of the first complete answer


@dataclasses.dataclass
class Peak:
    """The server's RSS (MiB, with its children) and threads: before the load, and the most."""

    idle_rss: float | None = None
    idle_vms: float | None = None
    idle_threads: int | None = None
    rss: float = 0.0
    vms: float = 0.0  # address space: what --limit-memory-hard (RLIMIT_AS) caps
    threads: int = 0


@dataclasses.dataclass
class Result:
    mode: str
    error: str | None = None  # could not be measured: why
    ramp: float | None = None  # seconds from the first connect until all were held
    held: int | None = None  # the app's peak count of requests inside /poll
    held_after_quick: int | None = None  # inside /poll once the quick series was done
    polls: PollCounts = dataclasses.field(default_factory=PollCounts)
    quick: list[float] = dataclasses.field(default_factory=list)  # seconds, the answered ones
    quick_failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    quick_done: float | None = None  # time.perf_counter() at the end of the quick series
    stats_failed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    peak: Peak = dataclasses.field(default_factory=Peak)
    notes: list[str] = dataclasses.field(default_factory=list)
    log_problems: list[str] = dataclasses.field(default_factory=list)


def failure(error: BaseException) -> str:
    """A short name for what went wrong: ECONNRESET, TimeoutError..."""
    if isinstance(error, OSError) and error.errno is not None:
        return errno.errorcode.get(error.errno, type(error).__name__)
    return type(error).__name__


# --- the server ---


@dataclasses.dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").rstrip()
            return "\n".join(text.splitlines()[-lines:]) or "(no output)"
        return "(no log)"

    def check_alive(self, during: str) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"exited with code {self.process.returncode} {during}:\n{self.tail()}"
            )


@contextlib.contextmanager
def started(mode: str, log_path: Path, home: Path) -> Iterator[Running]:
    """The mode's server in its own process group, once ``/quick`` answers; the whole group
    is stopped on the way out, whatever happens."""
    port = free_port()
    with open(log_path, "ab") as log:
        process = spawn(server_command(mode, port), APPS_DIR, home, log)
    try:
        running = Running(process, port, log_path)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            running.check_alive("before answering")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(port, "/quick", timeout=1.0).status == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchmarkError(f"no answer after {READY_TIMEOUT:g}s:\n{running.tail()}")
            time.sleep(0.05)  # polling interval, not synchronisation
        yield running
    finally:
        stop(process)


def stats(port: int, result: Result) -> dict[str, int] | None:
    """The app's counts (polling: inside /poll now; peak; done), or None when /stats was not
    answered: a server out of threads answers 503 to it as to any request."""
    try:
        answer = http_get(port, "/stats", QUICK_TIMEOUT)
    except (OSError, http.client.HTTPException) as error:
        result.stats_failed[failure(error)] += 1
        return None
    if answer.status != 200:
        result.stats_failed[f"HTTP {answer.status}"] += 1
        return None
    counts: dict[str, int] = json.loads(answer.body)
    return counts


class Sampler:
    """Samples the server's RSS (with its children) and threads every SAMPLE_EVERY seconds
    on a thread of its own, keeping the most of each."""

    def __init__(self, pid: int, peak: Peak) -> None:
        self.process = psutil.Process(pid)
        self.peak = peak
        self.peak.idle_rss, self.peak.idle_vms, self.peak.idle_threads = self.sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def sample(self) -> tuple[float, float, int]:
        """RSS and VMS in MiB, threads."""
        processes = [self.process, *self.process.children(recursive=True)]
        rss = vms = threads = 0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                memory = process.memory_info()
                rss, vms = rss + memory.rss, vms + memory.vms
                threads += process.num_threads()
        return rss / MiB, vms / MiB, threads

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            with contextlib.suppress(psutil.Error):
                rss, vms, threads = self.sample()
                self.peak.rss = max(self.peak.rss, rss)
                self.peak.vms = max(self.peak.vms, vms)
                self.peak.threads = max(self.peak.threads, threads)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the long-poll client ---


class LongPolls:
    """``count`` long-poll requests sent at once, each on its own connection, by one thread
    with non-blocking sockets and a selector; ends once all are answered (read to the close)
    or failed, or at ``deadline`` (time.perf_counter())."""

    def __init__(self, port: int, count: int, hold: float, deadline: float) -> None:
        self.port = port
        self.count = count
        self.deadline = deadline
        self.request = (
            f"GET /poll?seconds={hold:g} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.counts = PollCounts()
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="long-polls", daemon=True)

    def __enter__(self) -> LongPolls:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()  # already done after a wait(); an exception does not wait
        self._thread.join(1.0)

    def wait(self) -> None:
        self._thread.join(max(0.0, self.deadline - time.perf_counter()) + 1.0)

    @property
    def sending(self) -> bool:
        return self.counts.sent + sum(self.counts.failed.values()) < self.count

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            try:
                for _ in range(self.count):
                    self._open(selector)
                while not self._stop.is_set() and selector.get_map():
                    if time.perf_counter() > self.deadline:
                        break
                    for key, events in selector.select(timeout=0.2):
                        self._step(selector, key.fileobj, key.data, events)  # type: ignore[arg-type]
            finally:
                for key in list(selector.get_map().values()):
                    self.counts.failed["no answer by the deadline"] += 1
                    selector.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]

    def _open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        error = sock.connect_ex((HOST, self.port))
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            self.counts.failed[errno.errorcode.get(error, str(error))] += 1
            return
        selector.register(sock, selectors.EVENT_WRITE, bytearray())

    def _step(
        self,
        selector: selectors.BaseSelector,
        sock: socket.socket,
        received: bytearray,
        events: int,
    ) -> None:
        try:
            if events & selectors.EVENT_WRITE:  # connected, or failed to
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    raise OSError(error, os.strerror(error))
                if sock.send(self.request) != len(self.request):  # an empty send buffer
                    raise OSError(errno.EAGAIN, "request not sent whole")
                self.counts.sent += 1
                selector.modify(sock, selectors.EVENT_READ, received)
                return
            data = sock.recv(READ_SIZE)
        except OSError as error:
            selector.unregister(sock)
            sock.close()
            self.counts.failed[failure(error)] += 1
            return
        if data:
            received += data
            return
        selector.unregister(sock)  # the server closed: the answer is whole
        sock.close()
        self._answered(bytes(received))

    def _answered(self, answer: bytes) -> None:
        status = answer.split(b"\r\n", 1)[0].split()[1:2]  # HTTP/1.1 200 OK
        if not answer:
            self.counts.failed["closed without an answer"] += 1
        elif status == [b"200"]:
            self.counts.ok += 1
            if self.counts.first_answer is None:
                self.counts.first_answer = time.perf_counter()
        else:
            self.counts.failed[f"HTTP {b''.join(status).decode(errors='replace') or '?'}"] += 1


# --- measuring a mode ---


def wait_held(running: Running, polls: LongPolls, result: Result, limit: float) -> None:
    """Until all the long-polls are inside /poll, or their count has stopped growing for
    STALLED_AFTER (the client done sending), or `limit` seconds have passed."""
    deadline = polls.started + limit
    most, grew = 0, time.perf_counter()
    while True:
        running.check_alive("while the long-polls came in")
        counts = stats(running.port, result)
        polling = most if counts is None else counts["polling"]
        now = time.perf_counter()
        if polling >= polls.count:
            result.ramp = now - polls.started
            return
        if polling > most:
            most, grew = polling, now
        # Stalled: read, and no more than STALLED_AFTER ago (a slow /stats proves nothing).
        stalled = counts is not None and not polls.sending and now - grew > STALLED_AFTER
        if now > deadline or stalled:
            unanswered = sum(result.stats_failed.values())
            result.notes.append(
                f"not all held: at most {most} of {polls.count} seen inside /poll "
                f"{now - polls.started:.1f}s after the first connect ({polls.counts.sent} "
                f"sent, /stats unanswered {unanswered} times); the quick series started then"
            )
            return
        time.sleep(STATS_EVERY)  # polling interval, not synchronisation


def quick_series(port: int, count: int, result: Result) -> None:
    for _ in range(count):
        began = time.perf_counter()
        try:
            answer = http_get(port, "/quick", QUICK_TIMEOUT)
        except (OSError, http.client.HTTPException) as error:
            result.quick_failed[failure(error)] += 1
            continue
        if answer.status == 200:
            result.quick.append(time.perf_counter() - began)
        else:
            result.quick_failed[f"HTTP {answer.status}"] += 1
    result.quick_done = time.perf_counter()


def measure(mode: str, args: argparse.Namespace, folder: Path) -> Result:
    result = Result(mode)
    log_path = folder / f"{mode}.log"
    progress(f"{mode}: starting")
    try:
        with started(mode, log_path, folder / "home") as running:
            deadline = time.perf_counter() + args.hold * 1.5 + ANSWER_GRACE
            with (
                Sampler(running.process.pid, result.peak),
                LongPolls(running.port, args.connections, args.hold, deadline) as polls,
            ):
                result.polls = polls.counts
                progress(f"{mode}: {args.connections} long-polls of {args.hold:g}s")
                wait_held(running, polls, result, args.hold / 2)
                progress(f"{mode}: {args.quick} quick requests")
                quick_series(running.port, args.quick, result)
                after_quick = stats(running.port, result)
                result.held_after_quick = None if after_quick is None else after_quick["polling"]
                progress(f"{mode}: waiting for the long-polls' answers")
                polls.wait()
            running.check_alive("during the run")
            final = stats(running.port, result)
            if final is None:
                raise BenchmarkError("/stats was not answered after the long-polls")
            result.held = final["peak"]
    except BenchmarkError as error:
        result.error = str(error)
    except (OSError, psutil.Error) as error:
        result.error = f"{failure(error)}: {error}"
    with contextlib.suppress(OSError):  # the server is stopped: its log is whole
        result.log_problems = problem_lines(log_path.read_text(errors="replace"))
    first = result.polls.first_answer
    if result.quick_done is not None and first is not None and first < result.quick_done:
        result.notes.append(
            "the first long-poll was answered before the quick series ended: not all of the "
            "series ran while the long-polls were held (a longer --hold fixes that)"
        )
    return result


# --- report ---


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def figure(value: float | int | None, form: str = "{}") -> str:
    return "-" if value is None else form.format(value)


def result_row(r: Result, args: argparse.Namespace) -> list[str]:
    quick = r.quick
    return [
        r.mode,
        figure(r.held),
        figure(r.ramp, "{:.2f}"),
        f"{r.polls.ok}/{args.connections}",
        f"{len(quick)}/{args.quick}",
        ms(percentile(quick, 0.5)),
        ms(percentile(quick, 0.99)),
        ms(max(quick, default=None)),
        figure(r.peak.idle_rss, "{:.1f}"),
        figure(r.peak.rss or None, "{:.1f}"),
        figure(r.peak.vms or None, "{:.0f}"),
        figure(r.peak.idle_threads),
        figure(r.peak.threads or None),
    ]


def results_section(results: list[Result], args: argparse.Namespace) -> str:
    title = (
        f"{args.connections} long-polls of {args.hold:g}s sent at once; {args.quick} /quick "
        "requests meanwhile, one after another, a new connection each; RSS and VMS (address "
        "space) in MiB with children, sampled every 0.1 s; threaded-unlimited: threaded with "
        "--limit-memory-hard 0"
    )
    header = ["mode", "held at once", "all held s", "polls 200", "quick 200"]
    header += ["p50 ms", "p99 ms", "max ms", "RSS idle", "RSS peak", "VMS peak"]
    header += ["threads idle", "peak"]
    rows = [result_row(r, args) for r in results if r.error is None]
    missing = [f"{r.mode}: not measured: {r.error}" for r in results if r.error]
    return "\n".join([title, *(table(header, rows) if rows else []), *missing])


def targets_section(r: Result, connections: int) -> str:
    p99 = percentile(r.quick, 0.99)
    rss = r.peak.rss or None
    checks = [
        (f"all {connections} held at once", figure(r.held), r.held == connections),
        (f"quick p99 < {TARGET_P99 * 1000:.0f} ms", f"{ms(p99)} ms", p99 and p99 < TARGET_P99),
        (
            f"RSS < 150 MB ({TARGET_RSS:.0f} MiB)",
            f"{figure(rss, '{:.1f}')} MiB",
            rss and rss < TARGET_RSS,
        ),
    ]
    rows = [[target, value, verdict(None if r.error else bool(ok))] for target, value, ok in checks]
    return "\n".join(["gevent targets", *table(["target", "gevent", "verdict"], rows)])


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.1f}x"


def ratio_section(gevent: Result, others: list[Result]) -> str:
    figures: list[tuple[str, Callable[[Result], float | None]]] = [
        ("RSS peak", lambda r: r.peak.rss or None),
        ("VMS peak", lambda r: r.peak.vms or None),
        ("quick p99", lambda r: percentile(r.quick, 0.99)),
        ("threads peak", lambda r: r.peak.threads or None),
    ]
    rows = [[name, *(ratio(get(r), get(gevent)) for r in others)] for name, get in figures]
    title = "Ratios mode/gevent (above 1.0x: the mode uses more, or is slower)"
    return "\n".join([title, *table(["figure", *(r.mode for r in others)], rows)])


def collapsed(lines: list[str]) -> list[str]:
    """The lines without their time and PID, each once, with how many times it came."""
    counts = collections.Counter(LOG_PREFIX.sub("", line) for line in lines)
    return [line if count == 1 else f"{line} (x{count})" for line, count in counts.items()]


def notes_section(results: list[Result]) -> str:
    lines = ["Logs: ERROR, WARNING and Traceback lines"]
    for r in results:
        problems = collapsed(r.log_problems)
        lines += [f"{r.mode}: {problem}" for problem in problems[:SHOWN_PROBLEMS]] or [
            f"{r.mode}: none"
        ]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"{r.mode}: ... and {len(problems) - SHOWN_PROBLEMS} more")
    notes = []
    for r in results:
        notes += [f"{r.mode}: {note}" for note in r.notes]
        failures = [("long-polls", r.polls.failed), ("quick requests", r.quick_failed)]
        failures.append(("/stats requests", r.stats_failed))
        for what, failed in failures:
            if failed:
                kinds = ", ".join(f"{kind} x{count}" for kind, count in failed.most_common())
                notes.append(f"{r.mode}: failed {what}: {kinds}")
        if r.held_after_quick is not None and r.held is not None and r.held_after_quick < r.held:
            notes.append(
                f"{r.mode}: {r.held_after_quick} inside /poll once the quick series was done"
            )
    if notes:
        lines += ["", "Notes", *notes]
    return "\n".join(lines)


def report(results: list[Result], args: argparse.Namespace, loads: list[float]) -> str:
    machine = (
        f"{os.cpu_count()} CPUs; load average (1 min) {loads[0]:.2f} at the start, "
        f"{loads[-1]:.2f} at the end: latencies from a busy machine are not the server's"
    )
    sections = [machine, results_section(results, args)]
    gevent = next((r for r in results if r.mode == "gevent"), None)
    if gevent is not None:
        sections.append(targets_section(gevent, args.connections))
    others = [r for r in results if r.mode != "gevent" and r.error is None]
    if gevent is not None and gevent.error is None and others:
        sections.append(ratio_section(gevent, others))
    sections.append(notes_section(results))
    return "\n\n".join(sections)


# --- command line ---


def mode_list(text: str) -> list[str]:
    return chosen(text, MODES, "mode(s)")


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value:g}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--connections",
        type=positive_int,
        default=1000,
        help="long-poll requests held at once (default: 1000)",
    )
    parser.add_argument(
        "--hold",
        type=positive_float,
        default=10.0,
        help="seconds each long-poll waits server-side (default: 10)",
    )
    parser.add_argument(
        "--quick", type=positive_int, default=200, help="quick requests measured (default: 200)"
    )
    parser.add_argument(
        "--modes",
        type=mode_list,
        default=list(MODES),
        help=f"comma-separated subset of {','.join(MODES)} (default: all)",
    )
    return parser.parse_args(argv)


def check_requirements(modes: list[str]) -> None:
    # This file's folder comes first on sys.path, and this file is named gevent.py.
    path = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
    needed = ["devserve", *(["gevent"] if "gevent" in modes else [])]
    for module in needed:
        if importlib.machinery.PathFinder.find_spec(module, path) is None:
            raise BenchmarkError(
                f"{module} is not importable by {sys.executable}; run this script with the "
                "Python of the virtualenv devserve is installed in (pip install '.[gevent]')"
            )


def raise_open_files_limit(connections: int) -> int:
    """The soft limit on open files up to the hard one (the servers inherit it): each held
    connection takes a descriptor here and one in the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if limit < connections + 100:
        raise BenchmarkError(
            f"the open files limit is {limit}: too low for {connections} connections "
            "(raise it with ulimit -Hn, or lower --connections)"
        )
    return limit


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        check_requirements(args.modes)
        limit = raise_open_files_limit(args.connections)
        progress(
            f"gevent: {', '.join(args.modes)}; {args.connections} long-polls of {args.hold:g}s, "
            f"{args.quick} quick requests; open files limit {limit}; {os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]}"
        )
        with tempfile.TemporaryDirectory(prefix="devserve-gevent-") as temp:
            folder = Path(temp)
            (folder / "home").mkdir()  # an empty HOME: no ~/.devserverc
            loads = [os.getloadavg()[0]]
            results = [measure(mode, args, folder) for mode in args.modes]
            loads.append(os.getloadavg()[0])
    except BenchmarkError as error:
        print(f"gevent: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gevent: interrupted", file=sys.stderr)
        return 130
    print(report(results, args, loads))
    unmeasured = [r.mode for r in results if r.error]
    if unmeasured:
        print(f"gevent: error: not measured: {', '.join(unmeasured)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
