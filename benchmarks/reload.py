"""Reload behaviour: devserve's ``--dev reload`` against Werkzeug, uvicorn and gunicorn.

Every server serves the same tiny package, ``benchmarks/apps/reloadapp`` (``/`` answers the
``VERSION`` string defined in ``reloadapp/app.py``, ``/slow`` answers it after 2 s), from a
temporary copy of ``benchmarks/apps`` (so the edits never touch the repository), each in its
own process group on 127.0.0.1, started the way a developer would (default logging, sent to
a file):

* devserve: ``python -m devserve -p PORT --dev reload reloadapp.app:app`` (warm reloads, the
  default: a fork of a parent that keeps devserve and the libraries imported)
* devserve-exec: the same with ``--reload-mode exec`` (a fresh image of the process per reload)
* werkzeug: ``run_simple(host, port, app, use_reloader=True, reloader_type="stat")``
  (single-threaded, ``run_simple``'s default)
* uvicorn: ``python -m uvicorn --interface wsgi --reload --port PORT reloadapp.app:app``
* gunicorn: ``python -m gunicorn --reload -w 1 -b 127.0.0.1:PORT reloadapp.app:app``

A reload is triggered by rewriting the ``VERSION`` line of the copy's ``app.py``, alternately
as an atomic save (a temporary file in the same folder, then ``os.replace``) and in place.
Each edit also grows the file, as real edits change its size: Python trusts a cached ``.pyc``
whose recorded source size and mtime (in whole seconds) match, which would otherwise let a
server that re-imports within the second run the previous version.

Measured per server (one server at a time):

* reload latency: from the start of the write to the first response carrying the new
  version, polling ``/`` with a fresh connection every ~5 ms; a reload not seen within 10 s is
  a timeout, not a latency. The next edit waits until the new version is served, plus 0.3 s
  so that mtime-based reloaders see distinct times (that spacing is not part of the latency);
* failed requests during 10 reloads while 4 client threads hammer ``/`` with new connections
  (2 s timeout each): connection errors, timeouts and non-200 answers;
* whether a ``/slow`` request that is running when a reload is triggered (0.3 s in) still
  completes with a 200;
* with a tree of ``--tree-files`` small ``.py`` files inside the package folder, in a fresh
  process: start-up time (devserve's own ``ready in N ms`` for its watcher; for every server
  the time from process start to the first successful response), the CPU time the whole
  process tree uses over 10 idle seconds (after 3 s to settle), the reload latency, and
  whether a change to a file of the tree (which the app never imports) reloads at all.

Run with the Python of the virtualenv devserve is installed in, from the repository root::

    pip install -e '.[bench]'
    python benchmarks/reload.py [--reloads 20] [--servers devserve,uvicorn] [--skip-tree]

Exits 0 whatever the figures (this is a measurement); 1 if it could not measure devserve.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import http.client
import importlib.metadata
import importlib.util
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil  # a dependency of devserve
from processes import HOST, free_port, spawn, stop

APPS_DIR = Path(__file__).resolve().parent / "apps"
PACKAGE = "reloadapp"  # benchmarks/apps/reloadapp, served from a temporary copy of apps/
TARGET = f"{PACKAGE}.app:app"
INITIAL_VERSION = "v0"  # what reloadapp/app.py answers before any edit

READY_TIMEOUT = 30.0  # seconds a server gets to answer its first request
RELOAD_TIMEOUT = 10.0  # seconds a reload gets to show; later counts as a timeout
POLL_INTERVAL = 0.005  # between two polls for the new version
EDIT_SPACING = 0.3  # between a reload showing and the next edit; not part of any latency
GIVE_UP_AFTER = 3  # reloads in a row that time out end the series
LOAD_CLIENTS = 4
LOAD_RELOADS = 10
LOAD_TIMEOUT = 2.0  # per request of the load clients
SLOW_DELAY = 0.3  # the reload is triggered this long after /slow is sent
SLOW_TIMEOUT = 15.0  # /slow takes 2 s, plus however long the server makes it wait
TREE_RELOADS = 8
TREE_EDIT_TIMEOUT = 5.0  # a change in the tree not followed by a reload by then: unwatched
SETTLE_SECONDS = 3.0  # after start-up, before the idle window
IDLE_SECONDS = 10.0
FILES_PER_FOLDER = 100
SAME_WITH_TREE = (1.25, 0.020)  # "with the tree ~ without": within 25 % or 20 ms

VERSION_LINE = re.compile(r'^VERSION = "[^"]*".*$', re.MULTILINE)
DEVSERVE_WATCHING = re.compile(r"watching .* \(ready in (\d+) ms\)")
DEVSERVE_RELOADED = re.compile(r"reloaded in (\d+) ms")

# Werkzeug's reloader re-runs this same command line (sys.orig_argv) for every child.
WERKZEUG_RUNNER = f"""\
import sys
from werkzeug.serving import run_simple
from {PACKAGE}.app import app
run_simple({HOST!r}, int(sys.argv[1]), app, use_reloader=True, reloader_type="stat")
"""


class BenchmarkError(Exception):
    """Something could not be measured; the message says why, in one line."""


class StartError(BenchmarkError):
    """The server did not start (or not answer) at all."""


# --- the servers ---


@dataclasses.dataclass(frozen=True)
class Peer:
    """A server under test, how to start it on a port, and its module (also its
    distribution: the name when not given)."""

    name: str
    command: Callable[[int], list[str]]
    install: str  # how to get it
    reloader: Callable[[], str]  # which reloader it uses here
    module: str = ""

    @property
    def distribution(self) -> str:
        return self.module or self.name

    @property
    def is_devserve(self) -> bool:
        return self.distribution == "devserve"


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gunicorn_reloader() -> str:
    # --reload-engine auto: inotify when the inotify package (a devserve dependency) imports.
    return "inotify, module folders" if importable("inotify") else "poll, 1 s"


def uvicorn_reloader() -> str:
    return "watchfiles" if importable("watchfiles") else "stat polling (no watchfiles!)"


def devserve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "devserve", "-p", str(port), "--dev", "reload", TARGET]


def devserve_exec_command(port: int) -> list[str]:
    return [*devserve_command(port)[:-1], "--reload-mode", "exec", TARGET]


def werkzeug_command(port: int) -> list[str]:
    return [sys.executable, "-c", WERKZEUG_RUNNER, str(port)]


def uvicorn_command(port: int) -> list[str]:
    return [
        sys.executable,
        *("-m", "uvicorn", "--interface", "wsgi", "--reload"),
        *("--host", HOST, "--port", str(port), TARGET),
    ]


def gunicorn_command(port: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "--reload", "-w", "1", "-b", f"{HOST}:{port}", TARGET]


BENCH_EXTRA = "pip install -e '.[bench]'"
PEERS = (
    Peer(
        "devserve", devserve_command, install="pip install -e .", reloader=lambda: "inotify, warm"
    ),
    Peer(
        "devserve-exec",
        devserve_exec_command,
        install="pip install -e .",
        reloader=lambda: "exec",
        module="devserve",
    ),
    Peer(
        "werkzeug", werkzeug_command, install="pip install werkzeug", reloader=lambda: "stat, 1 s"
    ),
    Peer("uvicorn", uvicorn_command, install=BENCH_EXTRA, reloader=uvicorn_reloader),
    Peer("gunicorn", gunicorn_command, install=BENCH_EXTRA, reloader=gunicorn_reloader),
)


# --- figures ---


@dataclasses.dataclass
class LoadCounts:
    """What the load clients saw during the reloads."""

    ok: int = 0
    connection_errors: int = 0
    timeouts: int = 0
    non_200: int = 0
    kinds: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        return self.connection_errors + self.timeouts + self.non_200

    def add(self, other: LoadCounts) -> None:
        self.ok += other.ok
        self.connection_errors += other.connection_errors
        self.timeouts += other.timeouts
        self.non_200 += other.non_200
        self.kinds.update(other.kinds)


@dataclasses.dataclass
class Reload:
    atomic: bool
    seconds: float | None  # None: not seen within RELOAD_TIMEOUT


@dataclasses.dataclass
class Result:
    """Everything measured for one server; None where it was not measured."""

    name: str
    version: str = ""
    reloader: str = ""
    error: str | None = None  # not installed, or did not start: nothing was measured
    notes: list[str] = dataclasses.field(default_factory=list)
    reloads: list[Reload] = dataclasses.field(default_factory=list)
    load: LoadCounts | None = None
    load_reloads: list[Reload] = dataclasses.field(default_factory=list)
    slow_outcome: str | None = None
    slow_completed: bool | None = None
    slow_reload: Reload | None = None
    tree_first_response: float | None = None
    tree_watcher_ready_ms: float | None = None  # devserve's own log line
    tree_idle_cpu: float | None = None  # CPU seconds per 10 s
    tree_reloads: list[Reload] = dataclasses.field(default_factory=list)
    tree_edit_reload: Reload | None = None  # after a change to a file of the tree
    logged_reload_ms: list[float] = dataclasses.field(default_factory=list)  # devserve's log


def latencies(reloads: list[Reload]) -> list[float]:
    return [r.seconds for r in reloads if r.seconds is not None]


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `fraction` of them <= it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def p50(reloads: list[Reload]) -> float | None:
    return percentile(latencies(reloads), 0.5)


# --- the app copy ---


class AppFile:
    """The copy's ``app.py``: each edit sets a new version (v1, v2, ...) and grows the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.template = path.read_text()
        if not VERSION_LINE.search(self.template):
            raise BenchmarkError(f'{path} has no VERSION = "..." line to edit')
        self.number = 0

    @property
    def version(self) -> str:
        return f"v{self.number}" if self.number else INITIAL_VERSION

    def edit(self, atomic: bool) -> None:
        self.number += 1
        line = f'VERSION = "{self.version}"  # edit {self.number} {"." * self.number}'
        text = VERSION_LINE.sub(line, self.template)
        if not atomic:
            with open(self.path, "w") as file:
                file.write(text)
            return
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".app.py.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(text)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def make_tree(folder: Path, files: int) -> None:
    """`files` small Python files, FILES_PER_FOLDER to a folder."""
    for index in range(math.ceil(files / FILES_PER_FOLDER)):
        sub = folder / f"d{index:04d}"
        sub.mkdir(parents=True)
        for number in range(min(FILES_PER_FOLDER, files - index * FILES_PER_FOLDER)):
            (sub / f"m{number:03d}.py").write_text(f"VALUE = {number}\n")


@dataclasses.dataclass(frozen=True)
class Workspace:
    apps: Path  # the copy of benchmarks/apps: the servers' cwd
    home: Path  # an empty HOME (no ~/.devserverc)
    logs: Path

    @property
    def app_path(self) -> Path:
        return self.apps / PACKAGE / "app.py"


@contextlib.contextmanager
def workspace(tree_files: int = 0) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix="devserve-reload-bench-") as temp:
        space = Workspace(Path(temp, "apps"), Path(temp, "home"), Path(temp, "logs"))
        shutil.copytree(APPS_DIR, space.apps, ignore=shutil.ignore_patterns("__pycache__"))
        space.home.mkdir()
        space.logs.mkdir()
        if tree_files:
            make_tree(space.apps / PACKAGE / "tree", tree_files)
        yield space


# --- HTTP ---


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    loaded: str  # the X-Loaded header: changes whenever the app module is imported again


def http_get(port: int, path: str, timeout: float) -> Answer:
    """One request on a new connection. Raises OSError or http.client.HTTPException."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        return Answer(response.status, body, response.getheader("X-Loaded", ""))
    finally:
        connection.close()


def try_get(port: int, timeout: float) -> Answer | None:
    """``/``, or None when the request failed (refused, reset, timed out...)."""
    with contextlib.suppress(OSError, http.client.HTTPException):
        return http_get(port, "/", timeout)
    return None


def answers(port: int, version: str, timeout: float) -> bool:
    answer = try_get(port, timeout)
    return answer is not None and answer.status == 200 and answer.body == version.encode()


# --- running a server ---


@dataclasses.dataclass
class RunningServer:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float  # time.perf_counter() when the process was started
    first_response: float = 0.0  # seconds from start to the first answer

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def last_log_line(self) -> str:
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"exited with code {self.process.returncode}: {self.last_log_line()}"
            )


def wait_for_first_response(server: RunningServer) -> None:
    deadline = server.started + READY_TIMEOUT
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise StartError(
                f"exited with code {server.process.returncode} before answering: "
                + server.last_log_line()
            )
        if answers(server.port, INITIAL_VERSION, timeout=1.0):
            server.first_response = time.perf_counter() - server.started
            return
        time.sleep(POLL_INTERVAL)  # polling interval, not synchronisation
    raise StartError(f"did not answer within {READY_TIMEOUT:g}s: {server.last_log_line()}")


@contextlib.contextmanager
def running(peer: Peer, space: Workspace, label: str) -> Iterator[RunningServer]:
    """Start the server in its own process group in the workspace; yield it once it answers
    the initial version. Stopped (killpg) on the way out, whatever happens."""
    log_path = space.logs / f"{peer.name}-{label}.log"
    port = free_port()
    with open(log_path, "ab") as log:  # O_APPEND: we may read it while the server writes
        started = time.perf_counter()
        process = spawn(peer.command(port), space.apps, space.home, log)
    try:
        server = RunningServer(peer.name, process, port, log_path, started)
        wait_for_first_response(server)
        yield server
    finally:
        stop(process)


def wait_for_log(server: RunningServer, pattern: re.Pattern[str], timeout: float) -> str:
    """The first match of `pattern` in the server's log, waiting up to `timeout`."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        match = pattern.search(server.log_text())
        if match:
            return match.group(1)
        server.check_alive()
        time.sleep(0.05)  # polling interval, not synchronisation
    raise BenchmarkError(f"no {pattern.pattern!r} line in the log within {timeout:g}s")


# --- reloads ---


def reload_once(server: RunningServer, app: AppFile, atomic: bool) -> Reload:
    """Edit, then poll with fresh connections until the new version answers."""
    started = time.perf_counter()
    app.edit(atomic)
    deadline = started + RELOAD_TIMEOUT
    while (now := time.perf_counter()) < deadline:
        if answers(server.port, app.version, timeout=deadline - now):
            return Reload(atomic, time.perf_counter() - started)
        time.sleep(POLL_INTERVAL)  # polling interval, not synchronisation
    return Reload(atomic, None)


def reload_series(server: RunningServer, app: AppFile, count: int, into: list[Reload]) -> None:
    """`count` reloads, alternating atomic saves and in-place writes, appended to `into`."""
    in_a_row = 0
    for number in range(count):
        time.sleep(EDIT_SPACING)  # distinct mtimes between edits; not part of any latency
        reload = reload_once(server, app, atomic=number % 2 == 0)
        into.append(reload)
        if reload.seconds is not None:
            in_a_row = 0
            continue
        server.check_alive()
        in_a_row += 1
        if in_a_row >= GIVE_UP_AFTER:
            raise BenchmarkError(f"gave up after {in_a_row} reloads in a row timed out")


def hammer(port: int, stop_event: threading.Event, counts: LoadCounts, deadline: float) -> None:
    """One load client: request after request, each on a new connection, until told."""
    while not stop_event.is_set() and time.perf_counter() < deadline:
        try:
            status = http_get(port, "/", LOAD_TIMEOUT).status
        except TimeoutError:
            counts.timeouts += 1
        except (OSError, http.client.HTTPException) as error:
            counts.connection_errors += 1
            counts.kinds[type(error).__name__] += 1
        else:
            if status == 200:
                counts.ok += 1
            else:
                counts.non_200 += 1
                counts.kinds[f"HTTP {status}"] += 1


@contextlib.contextmanager
def load_clients(port: int, seconds: float) -> Iterator[LoadCounts]:
    """LOAD_CLIENTS threads hammering the server while inside (for ``seconds`` at most);
    their counts, added up, fill the yielded LoadCounts once they have stopped."""
    stop_event = threading.Event()
    per_client = [LoadCounts() for _ in range(LOAD_CLIENTS)]
    deadline = time.perf_counter() + seconds
    clients = [
        threading.Thread(target=hammer, args=(port, stop_event, counts, deadline), daemon=True)
        for counts in per_client
    ]
    for client in clients:
        client.start()
    total = LoadCounts()
    try:
        yield total
    finally:
        stop_event.set()
        for client in clients:
            client.join(LOAD_TIMEOUT + 1)
        for counts in per_client:
            total.add(counts)


def reloads_under_load(server: RunningServer, app: AppFile, result: Result) -> None:
    seconds = LOAD_RELOADS * (RELOAD_TIMEOUT + EDIT_SPACING) + 10
    with load_clients(server.port, seconds) as result.load:
        reload_series(server, app, LOAD_RELOADS, result.load_reloads)


def slow_request_during_reload(server: RunningServer, app: AppFile, result: Result) -> None:
    outcome: list[str] = []
    completed: list[bool] = []

    def slow() -> None:
        started = time.perf_counter()
        try:
            answer = http_get(server.port, "/slow", SLOW_TIMEOUT)
        except (OSError, http.client.HTTPException) as error:
            took = time.perf_counter() - started
            outcome.append(f"{type(error).__name__} after {took:.2f} s")
            completed.append(False)
        else:
            took = time.perf_counter() - started
            outcome.append(f"{answer.status} after {took:.2f} s")
            completed.append(answer.status == 200)

    request = threading.Thread(target=slow, daemon=True)
    request.start()
    time.sleep(SLOW_DELAY)  # the reload is to land while /slow is being served
    result.slow_reload = reload_once(server, app, atomic=True)
    request.join(SLOW_TIMEOUT)
    result.slow_outcome = outcome[0] if outcome else f"no answer within {SLOW_TIMEOUT:g} s"
    result.slow_completed = bool(completed and completed[0])


# --- CPU ---


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its descendants (reaped children included)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def idle_cpu(server: RunningServer, seconds: float) -> float:
    """CPU seconds per 10 s that the idle server's process tree uses."""
    before = tree_cpu_seconds(server.process.pid)
    time.sleep(seconds)  # the idle window being measured
    server.check_alive()
    return (tree_cpu_seconds(server.process.pid) - before) * 10 / seconds


# --- one server ---


def measure_plain(peer: Peer, result: Result, args: argparse.Namespace) -> None:
    """Reload latency, failed requests under load, in-flight request: one process."""
    with workspace() as space, running(peer, space, "plain") as server:
        app = AppFile(space.app_path)
        try:
            progress(f"{peer.name}: up in {server.first_response:.2f} s; {args.reloads} reloads")
            reload_series(server, app, args.reloads, result.reloads)
            progress(f"{peer.name}: {LOAD_RELOADS} reloads under load ({LOAD_CLIENTS} clients)")
            reloads_under_load(server, app, result)
            progress(f"{peer.name}: a reload during /slow")
            slow_request_during_reload(server, app, result)
        finally:
            result.logged_reload_ms += logged_reloads(server)


def measure_tree(peer: Peer, result: Result, args: argparse.Namespace) -> None:
    """Start-up, idle CPU and reload latency with a big tree in the watched folder."""
    with workspace(args.tree_files) as space:
        progress(f"{peer.name}: {args.tree_files} files in the package; starting")
        with running(peer, space, "tree") as server:
            result.tree_first_response = server.first_response
            if peer.is_devserve:
                try:
                    ready = wait_for_log(server, DEVSERVE_WATCHING, READY_TIMEOUT)
                    result.tree_watcher_ready_ms = float(ready)
                except BenchmarkError as error:
                    record(result, f"tree run: {error}")
            time.sleep(SETTLE_SECONDS)  # let start-up work finish before the idle window
            progress(f"{peer.name}: {IDLE_SECONDS:g} s idle, then {TREE_RELOADS} reloads")
            result.tree_idle_cpu = idle_cpu(server, IDLE_SECONDS)
            reload_series(server, AppFile(space.app_path), TREE_RELOADS, result.tree_reloads)
            result.tree_edit_reload = reload_on_tree_edit(server, space)


def reload_on_tree_edit(server: RunningServer, space: Workspace) -> Reload:
    """Whether (and how fast) a change to a file of the tree, which the app never imports,
    reloads the server: the X-Loaded header changes with every import of the app."""
    time.sleep(EDIT_SPACING)  # distinct mtimes between edits; not part of any latency
    before = try_get(server.port, timeout=RELOAD_TIMEOUT)
    if before is None:
        server.check_alive()
        raise BenchmarkError("no answer before the edit in the tree")
    target = next((space.apps / PACKAGE / "tree").rglob("*.py"))
    started = time.perf_counter()
    with open(target, "a") as file:
        file.write("CHANGED = True\n")
    deadline = started + TREE_EDIT_TIMEOUT
    while (now := time.perf_counter()) < deadline:
        answer = try_get(server.port, timeout=deadline - now)
        if answer is not None and answer.status == 200 and answer.loaded != before.loaded:
            return Reload(atomic=False, seconds=time.perf_counter() - started)
        time.sleep(POLL_INTERVAL)  # polling interval, not synchronisation
    return Reload(atomic=False, seconds=None)


def logged_reloads(server: RunningServer) -> list[float]:
    """devserve's own 'reloaded in N ms' figures (from the first file event to serving)."""
    if not server.name.startswith("devserve"):
        return []
    return [float(ms) for ms in DEVSERVE_RELOADED.findall(server.log_text())]


def installed_version(peer: Peer) -> str | None:
    if not importable(peer.distribution):
        return None
    try:
        return importlib.metadata.version(peer.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def measure(peer: Peer, args: argparse.Namespace) -> Result:
    result = Result(peer.name)
    version = installed_version(peer)
    if version is None:
        result.error = f"not installed ({peer.install})"
        progress(f"{peer.name}: {result.error}")
        return result
    result.version = version
    result.reloader = peer.reloader()
    phases = [("reloads", measure_plain)]
    if not args.skip_tree:
        phases.append(("tree", measure_tree))
    for phase, run in phases:
        try:
            run(peer, result, args)
        except StartError as error:
            if phase == "reloads":
                result.error = f"failed to start: {error}"
                if peer.name == "uvicorn" and "interface" in str(error).lower():
                    result.error = f"uvicorn {version} refuses --interface wsgi: {error}"
                progress(f"{peer.name}: {result.error}")
                return result
            record(result, f"{phase} run: failed to start: {error}")
        except BenchmarkError as error:
            record(result, f"{phase} run: {error}")
    return result


def record(result: Result, note: str) -> None:
    result.notes.append(note)
    progress(f"{result.name}: {note}")


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --- report ---

CPU_RESOLUTION = 0.01  # seconds: the kernel counts CPU time in clock ticks


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def ratio(peer: float | None, base: float | None, floor: float = 0.0) -> str:
    """peer / base; when base is below what can be measured (`floor`), a lower bound."""
    if peer is None or base is None:
        return "-"
    if base <= floor or base <= 0:
        return f">{peer / floor:.0f}x" if floor and peer > floor else "n/a"
    return f"{peer / base:.1f}x"


def timeouts(reloads: list[Reload]) -> str:
    return f"{sum(r.seconds is None for r in reloads)}/{len(reloads)}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Header, rule, rows: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    lines = [line(row) for row in [header, *rows]]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def measured(results: list[Result]) -> list[Result]:
    return [r for r in results if r.error is None]


def section(title: str, header: list[str], rows: list[list[str]], results: list[Result]) -> str:
    """A titled table of the measured servers, then one line per server not measured."""
    missing = [f"{r.name}: {r.error}" for r in results if r.error]
    return "\n".join([title, *(table(header, rows) if rows else []), *missing])


def reload_row(r: Result) -> list[str]:
    values = latencies(r.reloads)
    return [
        r.name,
        r.version,
        r.reloader,
        ms(percentile(values, 0.5)),
        ms(percentile(values, 0.9)),
        ms(max(values, default=None)),
        ms(p50([x for x in r.reloads if x.atomic])),
        ms(p50([x for x in r.reloads if not x.atomic])),
        timeouts(r.reloads),
    ]


def reload_table(results: list[Result], reloads: int) -> str:
    title = (
        f"Reload latency, ms: {reloads} reloads, alternating atomic saves and in-place writes; "
        "from the write to the first response with the new version"
    )
    header = ["server", "version", "reloader", "p50", "p90", "max", "atomic p50"]
    header += ["in-place p50", "timeouts"]
    return section(title, header, [reload_row(r) for r in measured(results)], results)


def load_row(r: Result) -> list[str]:
    load = r.load
    reloads = [ms(p50(r.load_reloads)), timeouts(r.load_reloads)]
    if load is None:
        return [r.name, "-", "-", "-", "-", "-", *reloads]
    counts = [load.ok, load.connection_errors, load.timeouts, load.non_200, load.failed]
    return [r.name, *map(str, counts), *reloads]


def load_table(results: list[Result]) -> str:
    title = (
        f"Requests during {LOAD_RELOADS} reloads: {LOAD_CLIENTS} clients, a new connection "
        f"per request, {LOAD_TIMEOUT:g} s timeout"
    )
    header = ["server", "ok", "conn errors", "timeouts", "non-200", "FAILED"]
    header += ["reload p50 ms", "reload timeouts"]
    return section(title, header, [load_row(r) for r in measured(results)], results)


def slow_row(r: Result) -> list[str]:
    completed = "-" if r.slow_completed is None else ("yes" if r.slow_completed else "NO")
    reload_ms = "-"
    if r.slow_reload is not None:
        reload_ms = "timeout" if r.slow_reload.seconds is None else ms(r.slow_reload.seconds)
    return [r.name, completed, r.slow_outcome or "-", reload_ms]


def slow_table(results: list[Result]) -> str:
    title = f"In-flight request: GET /slow (2 s), a reload triggered {SLOW_DELAY:g} s in"
    header = ["server", "completed", "/slow answer", "reload latency ms"]
    return section(title, header, [slow_row(r) for r in measured(results)], results)


def tree_row(r: Result) -> list[str]:
    ready = "-" if r.tree_watcher_ready_ms is None else f"{r.tree_watcher_ready_ms:.0f}"
    cpu = "-" if r.tree_idle_cpu is None else f"{r.tree_idle_cpu:.2f}"
    edit = "-"
    if r.tree_edit_reload is not None:
        seconds = r.tree_edit_reload.seconds
        edit = (
            f"no (none in {TREE_EDIT_TIMEOUT:g} s)" if seconds is None else f"yes, {ms(seconds)} ms"
        )
    reloads = [ms(p50(r.tree_reloads)), timeouts(r.tree_reloads)]
    return [r.name, ready, ms(r.tree_first_response), cpu, *reloads, edit]


def tree_table(results: list[Result], files: int) -> str:
    title = "\n".join(
        [
            f"Big tree: {files} small .py files inside the package folder",
            "  watcher ready: devserve's own 'ready in N ms' (its watcher starts once it "
            "serves); not visible from outside for the others",
            "  start -> 1st response: ms from process start to the first answer, for all",
            "  tree edit reloads: whether changing one file of the tree reloads the server",
        ]
    )
    header = ["server", "watcher ready ms", "start -> 1st response", "idle CPU s/10 s"]
    header += ["reload p50 ms", "reload timeouts", "tree edit reloads"]
    return section(title, header, [tree_row(r) for r in measured(results)], results)


def ratio_table(results: list[Result], skip_tree: bool) -> str:
    base = next((r for r in measured(results) if r.name == "devserve"), None)
    peers = [r for r in measured(results) if r.name != "devserve"]
    if base is None or not peers:
        return ""
    figures: list[tuple[str, Callable[[Result], float | None], float]] = [
        ("reload p50", lambda r: p50(r.reloads), 0.0),
        ("reload p50 under load", lambda r: p50(r.load_reloads), 0.0),
    ]
    if not skip_tree:
        figures += [
            ("reload p50 with the tree", lambda r: p50(r.tree_reloads), 0.0),
            ("start -> 1st response, tree", lambda r: r.tree_first_response, 0.0),
            ("idle CPU with the tree", lambda r: r.tree_idle_cpu, CPU_RESOLUTION),
        ]
    rows = [
        [label, *(ratio(figure(peer), figure(base), floor) for peer in peers)]
        for label, figure, floor in figures
    ]
    title = "Ratios, peer / devserve (above 1.0x: devserve is faster or uses less)"
    return "\n".join([title, *table(["figure", *(p.name for p in peers)], rows)])


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT MET")


def targets(results: list[Result], args: argparse.Namespace) -> str:
    base = next((r for r in measured(results) if r.name == "devserve"), None)
    if base is None:
        return ""
    plain = p50(base.reloads)
    checks: list[tuple[str, str, bool | None]] = [
        ("reload p50 <= 150 ms", f"{ms(plain)} ms", None if plain is None else plain <= 0.150)
    ]
    checks.append(
        ("warm reload p50 <= 30 ms", f"{ms(plain)} ms", None if plain is None else plain <= 0.030)
    )
    gunicorn = next((r for r in measured(results) if r.name == "gunicorn"), None)
    theirs = p50(gunicorn.reloads) if gunicorn else None
    shown = "gunicorn not measured" if theirs is None else f"{ms(plain)} vs {ms(theirs)} ms"
    below = None if theirs is None or plain is None else plain < theirs
    checks.append(("below gunicorn --reload's p50", shown, below))
    uvicorn = next((r for r in measured(results) if r.name == "uvicorn"), None)
    peer = p50(uvicorn.reloads) if uvicorn else None
    faster = peer / plain if peer is not None and plain else None
    shown = "uvicorn not measured" if faster is None else f"{faster:.1f}x"
    checks.append(
        (">= 2x faster than uvicorn (p50)", shown, None if faster is None else faster >= 2)
    )
    failed = base.load.failed if base.load else None
    shown = "-" if failed is None else str(failed)
    checks.append(
        ("0 failed requests during reloads", shown, None if failed is None else failed == 0)
    )
    completed = "-" if base.slow_completed is None else ("yes" if base.slow_completed else "no")
    checks.append(("in-flight request completes with 200", completed, base.slow_completed))
    if not args.skip_tree:
        checks += tree_targets(base, plain, args.tree_files)
    rows = [[target, value, verdict(ok)] for target, value, ok in checks]
    return "\n".join(["devserve targets", *table(["target", "devserve", "verdict"], rows)])


def tree_targets(
    base: Result, plain: float | None, files: int
) -> list[tuple[str, str, bool | None]]:
    cpu = base.tree_idle_cpu
    shown = "-" if cpu is None else f"{cpu:.2f} s"
    checks = [
        (f"idle CPU <= 0.05 s per 10 s, {files} files", shown, None if cpu is None else cpu <= 0.05)
    ]
    tree = p50(base.tree_reloads)
    same = None
    if tree is not None and plain is not None:
        factor, slack = SAME_WITH_TREE
        same = tree <= max(plain * factor, plain + slack)
    label = f"reload p50 with the tree ~ without (<= {SAME_WITH_TREE[0]:g}x or +20 ms)"
    checks.append((label, f"{ms(tree)} vs {ms(plain)} ms", same))
    return checks


def notes(results: list[Result]) -> str:
    lines = []
    for r in measured(results):
        lines += [f"{r.name}: {note}" for note in r.notes]
        if r.load and r.load.kinds:
            kinds = ", ".join(f"{kind} x{count}" for kind, count in r.load.kinds.most_common())
            lines.append(f"{r.name}: failed requests under load: {kinds}")
        if r.logged_reload_ms:
            logged = statistics.median(r.logged_reload_ms)
            lines.append(
                f"{r.name}: its own log, 'reloaded in N ms' (first file event -> serving): "
                f"median {logged:.0f} ms over {len(r.logged_reload_ms)} reloads"
            )
    return "\n".join(["Notes", *lines]) if lines else ""


def report(results: list[Result], args: argparse.Namespace) -> str:
    sections = [reload_table(results, args.reloads), load_table(results), slow_table(results)]
    if not args.skip_tree:
        sections.append(tree_table(results, args.tree_files))
    sections += [ratio_table(results, args.skip_tree), targets(results, args), notes(results)]
    return "\n\n".join(section for section in sections if section)


# --- command line ---


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def chosen(text: str, known: Iterable[str], what: str) -> list[str]:
    """The names of a comma-separated option, each once, all of them `known`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def server_list(text: str) -> list[Peer]:
    known = {peer.name: peer for peer in PEERS}
    return [known[name] for name in chosen(text, known, "server(s)")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--reloads",
        type=positive_int,
        default=20,
        help="reloads for the latency figures (default: 20)",
    )
    parser.add_argument(
        "--servers",
        type=server_list,
        default=list(PEERS),
        help="comma-separated subset of devserve,devserve-exec,werkzeug,uvicorn,gunicorn "
        "(default: all)",
    )
    parser.add_argument(
        "--tree-files",
        type=positive_int,
        default=20000,
        help="files in the big tree (default: 20000)",
    )
    parser.add_argument("--skip-tree", action="store_true", help="skip the big-tree figures")
    return parser.parse_args(argv)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` that stops the servers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    tree = "no tree" if args.skip_tree else f"a {args.tree_files}-file tree"
    print(
        f"reload: {', '.join(p.name for p in args.servers)}; {args.reloads} reloads, "
        f"{LOAD_RELOADS} under load, {tree}; {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}",
        file=sys.stderr,
        flush=True,
    )
    try:
        results = [measure(peer, args) for peer in args.servers]
    except KeyboardInterrupt:
        print("reload: interrupted", file=sys.stderr)
        return 130
    print(report(results, args))
    devserve = next((r for r in results if r.name == "devserve"), None)
    if devserve is not None and devserve.error:
        print(f"reload: error: devserve {devserve.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
