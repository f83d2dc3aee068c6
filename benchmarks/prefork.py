"""Prefork mode: devserve ``--workers N`` against gunicorn's sync workers, side by side.

Both serve the same app, ``benchmarks/apps/work.py`` (``/``: hello world; ``/work``: the same
after 5 ms of CPU work), with the same number of worker processes (``--workers``, default 2),
each in its own process group on 127.0.0.1, both up for the whole run, their logs in files:

* devserve: ``python -m devserve --workers N -p PORT --log-level warning work:app`` (its request
  log silenced, as in throughput.py);
* gunicorn: ``python -m gunicorn -w N -k sync -b 127.0.0.1:PORT work:app`` (no access log by
  default).

Measured:

1. requests per second on each route with ``wrk`` (1 thread, 4 connections): one warm-up run
   per server and route (discarded), then rounds alternating the servers (A B, then B A, so
   that a drift in the machine's load favours neither); the medians are reported. A worker of
   either serves one connection at a time and answers ``Connection: close``, so wrk opens a
   new connection for every request against both;
2. memory: the RSS of the master and of each worker (the master's children), after the load
   and again after the reloads; also the workers' USS (the pages no other process shares);
3. requests during 10 reloads: 4 client threads hammer ``/``, a new connection per request
   (2 s timeout), while the master gets SIGHUP 10 times, about 1 s apart. A reload is done
   when no worker from before the HUP is left and N workers run (both servers start new
   workers and retire the old ones); counted: successes, connection errors, timeouts, non-200.

Then the ratios devserve/gunicorn, devserve's targets (requests per second >= gunicorn's on
both routes; no failed request during the reloads), and the ERROR, WARNING and Traceback lines
of each server's log, labelled with the phase they were written in (``--log-dir`` keeps the
logs).

Run with the Python of the virtualenv devserve is installed in, from the repository root::

    pip install '.[bench]'
    python benchmarks/prefork.py [--workers 2] [--duration 5] [--rounds 3] [--log-dir DIR]

Exits 0 whatever the figures (this is a measurement); 1 if it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # a dependency of devserve
from processes import HOST, free_port, spawn, stop
from reload import LoadCounts, http_get, load_clients, percentile, table
from throughput import WRK_INSTALL_HINT, BenchmarkError, parse_wrk, positive_int

APPS_DIR = Path(__file__).resolve().parent / "apps"
TARGET = "work:app"  # benchmarks/apps/work.py, imported with APPS_DIR as the cwd
ROUTES = {"hello": "/", "work": "/work"}  # route name -> path
CONNECTIONS = 4  # wrk's, on one thread
WARMUP_SECONDS = 2
READY_TIMEOUT = 20.0  # seconds a server gets to answer with all its workers up
HUPS = 10
HUP_SPACING = 1.0  # seconds from one HUP to the next (more when a reload takes longer)
RELOAD_TIMEOUT = 10.0  # a reload whose worker turnover is not seen by then: not done
LOAD_CLIENTS = 4  # reload.hammer threads; each request has reload.LOAD_TIMEOUT (2 s)
LOAD_LEAD = 0.5  # seconds of load before the first HUP and after the last reload
MiB = 1024 * 1024
MOMENTS = ("after load", "after reloads")  # when the memory is measured
LOG_PROBLEM = re.compile(r"\b(ERROR|WARNING|CRITICAL)\b")
TRACEBACK_FRAME = re.compile(r'\s+File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
STDLIB = sysconfig.get_paths()["stdlib"]
SHOWN_PROBLEMS = 12  # log lines shown per server


# --- the servers ---


def devserve_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        *("-m", "devserve", "--workers", str(workers), "-p", str(port)),
        *("--log-level", "warning", TARGET),
    ]


def gunicorn_command(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        *("-m", "gunicorn", "-w", str(workers), "-k", "sync"),
        *("-b", f"{HOST}:{port}", TARGET),
    ]


@dataclasses.dataclass(frozen=True)
class Memory:
    """MiB, at one moment."""

    master_rss: float
    worker_rss: list[float]
    worker_uss: list[float]


@dataclasses.dataclass
class Server:
    """A server under test, how to start it, and what was measured for it."""

    name: str
    command: Callable[[int, int], list[str]]
    version: str = ""
    rates: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # route -> rounds
    wrk_errors: dict[str, int] = dataclasses.field(default_factory=dict)  # route -> count
    memory: dict[str, Memory] = dataclasses.field(default_factory=dict)  # moment -> figures
    load: LoadCounts | None = None
    reloads: list[float | None] = dataclasses.field(default_factory=list)  # None: not done
    notes: list[str] = dataclasses.field(default_factory=list)
    phases: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # name, log offset
    log_problems: list[str] = dataclasses.field(default_factory=list)

    def mark(self, phase: str, log_path: Path) -> None:
        """From here on, the log's lines belong to `phase`."""
        with contextlib.suppress(OSError):
            self.phases.append((phase, log_path.stat().st_size))

    def median(self, route: str) -> float | None:
        rounds = self.rates.get(route)
        return statistics.median(rounds) if rounds else None


@dataclasses.dataclass
class Running:
    """A started server: its master process, port and log file."""

    server: Server
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    workers: int

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 20) -> str:
        text = self.log_text().rstrip()
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self, during: str) -> None:
        if not self.alive():
            raise BenchmarkError(
                f"{self.server.name} exited with code {self.process.returncode} {during}:\n"
                + self.tail()
            )

    def worker_pids(self) -> set[int]:
        """The master's children that have not exited (its workers)."""
        pids = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.status() != psutil.STATUS_ZOMBIE:
                        pids.add(child.pid)
        return pids


def wait_ready(running: Running) -> None:
    """Until ``/`` answers 200 and all the workers run: a prefork master listens before its
    workers accept, so a connection alone proves nothing."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        running.check_alive("before it was ready")
        if len(running.worker_pids()) == running.workers:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(running.port, "/", timeout=1.0).status == 200:
                    return
        if time.monotonic() > deadline:
            raise BenchmarkError(
                f"{running.server.name} was not ready after {READY_TIMEOUT:g}s:\n" + running.tail()
            )
        time.sleep(0.05)  # polling interval, not synchronisation


@contextlib.contextmanager
def started(server: Server, workers: int, log_dir: Path, home: Path) -> Iterator[Running]:
    """Start the server in its own process group; yield it once it serves with all its
    workers. The whole group is stopped on the way out, whatever happens."""
    port = free_port()
    log_path = log_dir / f"{server.name}.log"
    log_path.write_bytes(b"")  # a --log-dir used before: this run's log only
    with open(log_path, "ab") as log:  # O_APPEND: master and workers write to it
        process = spawn(server.command(port, workers), APPS_DIR, home, log)
    try:
        running = Running(server, process, port, log_path, workers)
        server.phases.append(("start-up", 0))
        wait_ready(running)
        yield running
    finally:
        server.mark("stop (TERM to its process group)", log_path)
        stop(process)


# --- throughput ---


def run_wrk(port: int, path: str, seconds: int) -> tuple[float, int]:
    """Requests per second, and socket errors plus non-2xx/3xx answers."""
    command = [
        "wrk",
        *("--threads", "1", "--connections", str(CONNECTIONS)),
        *("--duration", f"{seconds}s", "--timeout", "5s"),
        f"http://{HOST}:{port}{path}",
    ]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"wrk did not finish within {seconds + 30}s") from None
    if completed.returncode != 0:
        raise BenchmarkError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    result = parse_wrk(completed.stdout)
    return result.requests_per_second, result.errors


def measure_throughput(servers: list[Running], args: argparse.Namespace) -> None:
    for path in ROUTES.values():  # warm-up, discarded
        for running in servers:
            run_wrk(running.port, path, min(WARMUP_SECONDS, args.duration))
            running.check_alive(f"during the warm-up on {path}")
    for number in range(1, args.rounds + 1):
        for route, path in ROUTES.items():
            # A B, then B A: a drift in the machine's load favours neither.
            for running in servers if number % 2 else servers[::-1]:
                rate, errors = run_wrk(running.port, path, args.duration)
                running.check_alive(f"during a wrk round on {path}")
                server = running.server
                server.rates.setdefault(route, []).append(rate)
                server.wrk_errors[route] = server.wrk_errors.get(route, 0) + errors
                progress(
                    f"round {number}/{args.rounds} {route:<5} {server.name:<9} {rate:10.1f} req/s"
                )


# --- memory ---


def measure_memory(running: Running, moment: str) -> None:
    if not running.alive():
        return
    try:
        master = psutil.Process(running.process.pid)
        master_rss = master.memory_info().rss / MiB
        rss, uss = [], []
        for worker in master.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                info = worker.memory_full_info()
                rss.append(info.rss / MiB)
                uss.append(info.uss / MiB)
    except psutil.Error as error:
        running.server.notes.append(f"memory {moment}: {type(error).__name__}: {error}")
        return
    running.server.memory[moment] = Memory(master_rss, rss, uss)


# --- reloads under load ---


def wait_turnover(running: Running, before: set[int], sent: float) -> float | None:
    """Seconds from the HUP until no worker of `before` is left and N workers run; None if
    that is not seen within RELOAD_TIMEOUT or the master is gone."""
    while time.perf_counter() - sent < RELOAD_TIMEOUT and running.alive():
        now = running.worker_pids()
        if not now & before and len(now) >= running.workers:
            return time.perf_counter() - sent
        time.sleep(0.01)  # polling interval, not synchronisation
    return None


def send_hups(running: Running) -> bool:
    """HUPS reloads, about HUP_SPACING apart, each waited for (its worker turnover). False
    when the master is gone: the rest are not sent."""
    server = running.server
    for number in range(1, HUPS + 1):
        before = running.worker_pids()
        sent = time.perf_counter()
        os.kill(running.process.pid, signal.SIGHUP)  # not reaped yet: still our child's PID
        took = wait_turnover(running, before, sent)
        server.reloads.append(took)
        if not running.alive():
            server.notes.append(
                f"the master exited with code {running.process.returncode} after HUP "
                f"#{number}: no more HUPs, the load stopped there"
            )
            return False
        if took is None:
            server.notes.append(f"HUP #{number}: no worker turnover within {RELOAD_TIMEOUT:g}s")
        time.sleep(max(0.0, sent + HUP_SPACING - time.perf_counter()))  # pacing
    return True


def reloads_under_load(running: Running) -> None:
    seconds = HUPS * (RELOAD_TIMEOUT + HUP_SPACING) + 10
    with load_clients(running.port, seconds) as running.server.load:
        time.sleep(LOAD_LEAD)  # the load is on before the first HUP
        if send_hups(running):
            time.sleep(LOAD_LEAD)  # and goes on a little after the last reload


# --- logs ---


def log_problems(server: Server, log: bytes) -> list[str]:
    """The problems of each phase's part of the log, labelled with the phase."""
    problems = []
    bounds = [*server.phases[1:], ("", len(log))]
    for (phase, start), (_, end) in zip(server.phases, bounds, strict=True):
        text = log[start:end].decode(errors="replace")
        problems += [f"[{phase}] {problem}" for problem in problem_lines(text)]
    return problems


def problem_lines(text: str) -> list[str]:
    """ERROR/WARNING/CRITICAL lines, and each traceback as its exception and the innermost
    frame outside the standard library."""
    problems: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].rstrip()
        index += 1
        if not line.startswith("Traceback"):
            if LOG_PROBLEM.search(line):
                problems.append(line)
            continue
        frames = []
        while index < len(lines) and lines[index].startswith(" "):
            frame = TRACEBACK_FRAME.match(lines[index])
            if frame:
                frames.append(frame)
            index += 1
        exception = lines[index].strip() if index < len(lines) else "?"
        index += 1
        ours = [f for f in frames if not f["path"].startswith((STDLIB, "<"))] or frames
        where = ""
        if ours:
            where = f" in {Path(ours[-1]['path']).name}:{ours[-1]['line']} {ours[-1]['function']}()"
        problems.append(f"Traceback: {exception}{where}")
    return problems


# --- report ---


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" if values else "-"


def span(values: list[float]) -> str:
    return f"{min(values):.1f}..{max(values):.1f}" if values else "-"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def throughput_section(servers: list[Server], args: argparse.Namespace) -> str:
    title = (
        f"Requests per second: wrk, 1 thread, {CONNECTIONS} connections (a new one per request "
        f"for both), {args.duration} s x {args.rounds} rounds (A B, B A, ...) after a warm-up"
    )
    rows = []
    for route, path in ROUTES.items():
        for server in servers:
            median = server.median(route)
            rounds = "  ".join(f"{rate:.1f}" for rate in server.rates.get(route, []))
            errors = str(server.wrk_errors.get(route, 0))
            shown = "-" if median is None else f"{median:.1f}"
            rows.append([f"{path} ({route})", server.name, shown, errors, rounds])
    header = ["route", "server", "median req/s", "wrk errors", "rounds"]
    return "\n".join([title, *table(header, rows)])


def memory_section(servers: list[Server], workers: int) -> str:
    title = (
        f"Memory, MiB ({workers} workers): RSS; USS = the pages only that process maps "
        "(not shared with the master or the other workers)"
    )
    rows = []
    for server in servers:
        for moment in MOMENTS:
            figures = server.memory.get(moment)
            if figures is None:
                rows.append([server.name, moment, "-", "-", "-", "-", "-"])
                continue
            rows.append(
                [
                    server.name,
                    moment,
                    f"{figures.master_rss:.1f}",
                    str(len(figures.worker_rss)),
                    mean(figures.worker_rss),
                    span(figures.worker_rss),
                    mean(figures.worker_uss),
                ]
            )
    header = ["server", "when", "master RSS", "workers", "RSS/worker (mean)", "min..max"]
    header.append("USS/worker (mean)")
    return "\n".join([title, *table(header, rows)])


def reload_section(servers: list[Server]) -> str:
    title = (
        f"Requests during {HUPS} HUP reloads (~{HUP_SPACING:g} s apart): {LOAD_CLIENTS} "
        "clients on /, a new connection per request, 2 s timeout; reload = from the HUP until "
        "no worker from before it is left"
    )
    rows = []
    for server in servers:
        load = server.load
        done = [took for took in server.reloads if took is not None]
        counts = ["-"] * 5
        if load is not None:
            figures = [load.ok, load.connection_errors, load.timeouts, load.non_200, load.failed]
            counts = [str(figure) for figure in figures]
        reloads = [f"{len(done)}/{HUPS}", ms(percentile(done, 0.5)), ms(max(done, default=None))]
        rows.append([server.name, *counts, *reloads])
    header = ["server", "ok", "conn errors", "timeouts", "non-200", "FAILED"]
    header += ["reloads done", "reload p50 ms", "max ms"]
    return "\n".join([title, *table(header, rows)])


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def worker_rss(server: Server) -> float | None:
    figures = server.memory.get(MOMENTS[0])
    return statistics.mean(figures.worker_rss) if figures and figures.worker_rss else None


def shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio_section(devserve: Server, gunicorn: Server) -> str:
    rows = [
        [
            f"req/s on {path} ({route})",
            shown(ratio(devserve.median(route), gunicorn.median(route))),
            "above 1: devserve serves more",
        ]
        for route, path in ROUTES.items()
    ]
    rows.append(
        [
            "RSS per worker, after load",
            shown(ratio(worker_rss(devserve), worker_rss(gunicorn))),
            "below 1: devserve uses less",
        ]
    )
    return "\n".join(["Ratios devserve/gunicorn", *table(["figure", "ratio", "reading"], rows)])


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT MET")


def targets_section(devserve: Server, gunicorn: Server) -> str:
    rows = []
    for route, path in ROUTES.items():
        value = ratio(devserve.median(route), gunicorn.median(route))
        ok = None if value is None else value >= 1.0
        rows.append([f"req/s on {path} >= gunicorn's (ratio >= 1.0)", shown(value), verdict(ok)])
    failed = None if devserve.load is None else devserve.load.failed
    rows.append(
        [
            f"0 failed requests during {HUPS} HUP reloads",
            "-" if failed is None else str(failed),
            verdict(None if failed is None else failed == 0),
        ]
    )
    return "\n".join(["devserve targets", *table(["target", "devserve", "verdict"], rows)])


def notes_section(servers: list[Server], log_dir: str) -> str:
    lines = [f"Logs ({log_dir}): ERROR, WARNING and Traceback lines"]
    for server in servers:
        problems = server.log_problems
        if not problems:
            lines.append(f"{server.name}: none")
        for problem in problems[:SHOWN_PROBLEMS]:
            lines.append(f"{server.name}: {problem}")
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"{server.name}: ... and {len(problems) - SHOWN_PROBLEMS} more")
    notes = [f"{s.name}: {note}" for s in servers for note in s.notes]
    for server in servers:
        if server.load and server.load.kinds:
            kinds = server.load.kinds.most_common()
            shown_kinds = ", ".join(f"{kind} x{count}" for kind, count in kinds)
            notes.append(f"{server.name}: failed requests during the reloads: {shown_kinds}")
    if notes:
        lines += ["", "Notes", *notes]
    return "\n".join(lines)


def report(
    servers: list[Server], args: argparse.Namespace, log_dir: str, loads: list[float]
) -> str:
    devserve, gunicorn = servers
    machine = (
        f"{os.cpu_count()} CPUs; load average (1 min) {loads[0]:.2f} at the start, "
        f"{loads[-1]:.2f} at the end: figures from a busy machine move by tens of percent"
    )
    sections = [
        machine,
        throughput_section(servers, args),
        memory_section(servers, args.workers),
        reload_section(servers),
        ratio_section(devserve, gunicorn),
        targets_section(devserve, gunicorn),
        notes_section(servers, log_dir),
    ]
    return "\n\n".join(sections)


# --- command line ---


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--workers", type=positive_int, default=2, help="worker processes per server (default: 2)"
    )
    parser.add_argument(
        "--duration", type=positive_int, default=5, help="seconds per wrk round (default: 5)"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=3, help="rounds per server and route (default: 3)"
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep the servers' logs in this folder (default: a temporary one, removed)",
    )
    return parser.parse_args(argv)


def check_requirements(servers: list[Server]) -> None:
    if shutil.which("wrk") is None:
        raise BenchmarkError(WRK_INSTALL_HINT)
    for server in servers:
        if importlib.util.find_spec(server.name) is None:
            raise BenchmarkError(
                f"{server.name} is not importable by {sys.executable}; run this script with "
                "the Python of the virtualenv devserve is installed in (pip install '.[bench]')"
            )
        server.version = importlib.metadata.version(server.name)


def measure(servers: list[Server], args: argparse.Namespace, log_dir: Path, home: Path) -> None:
    with contextlib.ExitStack() as stack:
        running = [
            stack.enter_context(started(server, args.workers, log_dir, home)) for server in servers
        ]
        progress(f"both up ({args.workers} workers each); wrk on {', '.join(ROUTES.values())}")
        for each in running:
            each.server.mark("wrk", each.log_path)
        measure_throughput(running, args)
        for each in running:
            measure_memory(each, MOMENTS[0])
        for each in running:
            progress(f"{each.server.name}: {HUPS} HUPs under load ({LOAD_CLIENTS} clients)")
            each.server.mark("HUPs under load", each.log_path)
            reloads_under_load(each)
            measure_memory(each, MOMENTS[1])
            each.server.mark("idle", each.log_path)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    servers = [Server("devserve", devserve_command), Server("gunicorn", gunicorn_command)]
    try:
        check_requirements(servers)
        versions = ", ".join(f"{server.name} {server.version}" for server in servers)
        progress(
            f"prefork: {versions}; {args.workers} workers each; {os.cpu_count()} CPUs, "
            f"Python {sys.version.split()[0]}"
        )
        with contextlib.ExitStack() as stack:
            temp = stack.enter_context(tempfile.TemporaryDirectory(prefix="devserve-prefork-"))
            log_dir = args.log_dir or Path(temp, "logs")
            log_dir.mkdir(parents=True, exist_ok=True)
            home = Path(temp, "home")  # an empty HOME: no ~/.devserverc
            home.mkdir()
            loads = [os.getloadavg()[0]]
            try:
                measure(servers, args, log_dir, home)
                loads.append(os.getloadavg()[0])
            finally:  # the servers are stopped: their logs are complete
                for server in servers:
                    log = log_dir / f"{server.name}.log"
                    with contextlib.suppress(OSError):
                        server.log_problems = log_problems(server, log.read_bytes())
            shown_dir = str(args.log_dir) if args.log_dir else "temporary, removed"
            print(report(servers, args, shown_dir, loads))
    except BenchmarkError as error:
        print(f"prefork: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prefork: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
