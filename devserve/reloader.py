"""Phoenix reload: the process re-execs itself in place and keeps its listen socket.

Before the exec (:func:`reexec`) the server has stopped accepting and drained its requests;
the signals that could arrive in the exec gap are blocked (the mask survives exec, and the
new image unblocks them once its handlers are installed). What crosses the exec is one
typed record, :class:`Handover`, the only code that knows how it travels: the listen socket
on fd 3, announced by ``LISTEN_FDS=1``/``LISTEN_PID=<pid>`` as systemd does, then the
connections not served yet (with what was read of them), the prefork workers' heartbeat
pipes, the evented child's socket and the socket pair live reload's streams travel over
from the workers, described by one JSON variable. Every other descriptor
is closed (inotify watches included). The new image takes it all with
:meth:`Handover.decode`, so connections that arrive meanwhile wait in the kernel backlog.
The same decoding adopts a socket from systemd socket activation.

Also here: the syntax check a batch of changes passes before it may reload, and releasing
debugpy's adapter so an IDE's debug session survives the exec.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

__all__ = [
    "GAP_SIGNALS",
    "FileChanges",
    "HandedChildren",
    "HandedWorker",
    "Handover",
    "Reload",
    "SyntaxProblem",
    "check_syntax",
    "describe_paths",
    "discard_bytecode",
    "prepare_reload",
    "reexec",
]

_logger = logging.getLogger(__name__)

LISTEN_FD = 3  # the first descriptor systemd passes (SD_LISTEN_FDS_START)
HANDOVER_ENV = "DEVSERVE_HANDOVER"  # what the descriptors after the listen socket are (JSON)
ADAPTER_STOP_TIMEOUT = 3.0  # seconds for debugpy's adapter to end before a reload goes on
# Signals blocked across the exec gap: delivered late to the new image, never fatal.
GAP_SIGNALS = frozenset(
    {
        signal.SIGHUP,
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGTTIN,
        signal.SIGTTOU,
    }
)


@dataclass(frozen=True)
class FileChanges:
    """A settled batch of changed paths, as the watcher reports it to the control loop."""

    paths: frozenset[str]
    first_seen: float  # time.monotonic() of the first change


@dataclass(frozen=True)
class Reload:
    """Why and when a reload happens; every time is ``time.monotonic()``, which is the same
    clock for the old and the new image (CLOCK_MONOTONIC is system-wide)."""

    cause: str
    first_seen: float  # the change happened (the first event of its batch), or HUP arrived
    decided: float  # the batch settled and compiled: the server starts draining
    exec_at: float = 0.0  # drained: the exec, or the fork of the next serving process
    kind: str = "exec"  # "exec": a new image of the process; "warm": a fork of the warm parent
    paths: frozenset[str] = frozenset()  # the changed files that reload (none for HUP)

    def breakdown(self, ready: float) -> dict[str, int]:
        """Milliseconds: ``settle`` (first change to decision), ``drain`` (to the exec or
        the fork), ``restart`` (an exec) or ``load`` (a warm fork) to ``ready``, ``total``."""

        def ms(start: float, end: float) -> int:
            return round((end - start) * 1000)

        last = "load" if self.kind == "warm" else "restart"
        return {
            "settle": ms(self.first_seen, self.decided),
            "drain": ms(self.decided, self.exec_at),
            last: ms(self.exec_at, ready),
            "total": ms(self.first_seen, ready),
        }

    def summary(self, ready: float) -> str:
        """``hello/controllers.py (settle 27 + drain 0 + restart 96)`` (a warm reload:
        ``+ load 12``), in milliseconds."""
        parts = self.breakdown(ready)
        last = "load" if self.kind == "warm" else "restart"
        return (
            f"{self.cause} (settle {parts['settle']} + drain {parts['drain']} + {last} "
            f"{parts[last]})"
        )

    def record(self, ready: float) -> dict[str, Any]:
        """For the status: when (wall clock, ISO 8601), why, how, and how long."""
        at = time.time() - (time.monotonic() - self.first_seen)
        return {
            "at": _iso(at),
            "cause": self.cause,
            "paths": sorted(self.paths),
            "kind": self.kind,
            "ms": self.breakdown(ready),
        }


def _iso(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def describe_paths(paths: Iterable[str], limit: int = 3) -> str:
    """``addons/hello/controllers.py and 2 more``, relative to the current folder."""
    cwd = os.getcwd()
    shown = sorted(os.path.relpath(p, cwd) if p.startswith(cwd + os.sep) else p for p in paths)
    text = ", ".join(shown[:limit])
    if len(shown) > limit:
        text += f" and {len(shown) - limit} more"
    return text


@dataclass(frozen=True)
class SyntaxProblem:
    """A changed file that does not compile: its path, the line, the message, the
    offending source line (the log shows it; live reload shows it in the browser)."""

    path: str
    line: int | None
    message: str
    source: str = ""

    def __str__(self) -> str:
        """``shop/models.py, line 2: expected ':'`` and the source line below."""
        if self.line is None:
            return f"{describe_paths([self.path])}: {self.message}"
        return f"{describe_paths([self.path])}, line {self.line}: {self.message}\n    {self.source}"


def check_syntax(paths: Iterable[str]) -> list[SyntaxProblem]:
    """Compile every changed Python file, writing the bytecode the next image will load;
    one problem per syntax error (file, line, the offending source line). Deleted files
    are fine: the import will tell.

    The bytecode is hash-checked (PEP 552): Python would trust a timestamp ``.pyc`` whose
    recorded mtime (whole seconds) and size match, so an edit that keeps the size within
    the second of the last compile could otherwise run stale code; a hash-checked one stays
    hash-checked when Python rewrites it later."""
    import py_compile

    problems = []
    for path in sorted(_python_files(paths)):
        if not os.path.isfile(path):
            continue
        try:
            if sys.dont_write_bytecode:
                with open(path, "rb") as file:
                    compile(file.read(), path, "exec", dont_inherit=True)
                discard_bytecode([path])
            else:
                py_compile.compile(
                    path,
                    doraise=True,
                    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                )
        except py_compile.PyCompileError as error:
            problems.append(_syntax_problem(path, error.exc_value))
        except (SyntaxError, ValueError) as error:
            problems.append(_syntax_problem(path, error))
        except OSError:  # unreadable, or no writable __pycache__: the import will decide
            discard_bytecode([path])
    return problems


def _python_files(paths: Iterable[str]) -> Iterator[str]:
    """The Python files among ``paths``, and those inside a folder among them (a folder put
    back whole: its files are new to this process, whatever bytecode came with them)."""
    for path in paths:
        if path.endswith(".py"):
            yield path
        elif os.path.isdir(path):
            for folder, folders, names in os.walk(path):
                folders[:] = [f for f in folders if f != "__pycache__" and not f.startswith(".")]
                yield from (os.path.join(folder, n) for n in names if n.endswith(".py"))


def _syntax_problem(path: str, error: BaseException) -> SyntaxProblem:
    if isinstance(error, SyntaxError):
        return SyntaxProblem(path, error.lineno, error.msg, (error.text or "").strip())
    return SyntaxProblem(path, None, str(error))  # e.g. null bytes


def prepare_reload(changes: FileChanges) -> list[SyntaxProblem]:
    """What stops a batch of changes from reloading: its syntax errors (logged; the old
    code keeps serving). None: it may reload."""
    problems = check_syntax(changes.paths)
    for problem in problems:
        _logger.error("not reloading, syntax error in %s", problem)
    return problems


def discard_bytecode(paths: Iterable[str]) -> None:
    """Remove the cached bytecode of changed files (when devserve cannot rewrite it)."""
    import importlib.util

    for path in paths:
        if not path.endswith(".py"):
            continue
        for optimization in ("", 1, 2):
            with contextlib.suppress(OSError, ValueError):
                os.unlink(importlib.util.cache_from_source(path, optimization=optimization))


@dataclass(frozen=True)
class HandedWorker:
    """A prefork worker that serves on through the exec, for the next image to adopt."""

    pid: int
    number: int  # 1..N: "worker #2"
    heartbeat: int  # the read end of its heartbeat pipe (a descriptor)


@dataclass(frozen=True)
class HandedChildren:
    """The socket a prefork master keeps for its evented child, and the PIDs of the
    children still running on it (the next image starts its own and retires those)."""

    sock: socket.socket
    pids: tuple[int, ...]


@dataclass
class Handover:
    """Everything that crosses the exec of a reload, and the one place that knows how it
    travels: descriptors from ``LISTEN_FD`` on (the listen socket first, announced as
    systemd does with ``LISTEN_FDS=1``/``LISTEN_PID``, then the connections, the workers'
    heartbeat pipes and the evented socket), described by one JSON variable,
    ``DEVSERVE_HANDOVER``. :meth:`encode` in one image, :meth:`decode` in the next."""

    listener: socket.socket | None = None
    reload: Reload | None = None  # what changed, and when each step began
    # Accepted connections not served yet, each with what was read of its request.
    connections: list[tuple[socket.socket, bytes]] = field(default_factory=list)
    workers: list[HandedWorker] = field(default_factory=list)
    evented: HandedChildren | None = None
    # The prefork master's end and its workers' end of the socket pair workers pass live
    # reload's streams over: kept, so workers of the previous code reach the next master.
    own_channel: tuple[socket.socket, socket.socket] | None = None
    # Live reload's id of the code serving: still the code of a prefork master's workers
    # that serve on when the next image's code fails to load.
    image: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # the last reloads (status)
    watched: list[str] = field(default_factory=list)  # folders to watch beyond the project
    debugger_failures: int = 0  # wrong debugger PINs so far: a reload buys no guesses

    def encode(self, pid: int | None = None) -> tuple[list[int], dict[str, str]]:
        """The descriptors to pass, in slot order (the first goes on ``LISTEN_FD``), and the
        environment variables that tell the next image (``pid``: this one's) what they are."""
        passed, record = self.to_record()
        variables = {
            "LISTEN_FDS": "1",
            "LISTEN_PID": str(os.getpid() if pid is None else pid),
            HANDOVER_ENV: json.dumps(record),
        }
        return passed, variables

    def to_record(self) -> tuple[list[int], dict[str, Any]]:
        """The descriptors to pass, in slot order, and the record that says what each slot
        is (slots count from ``LISTEN_FD``): what :meth:`encode` puts in the environment,
        and what a warm child sends its parent with the descriptors over a socket."""
        if self.listener is None:
            raise ValueError("a hand-over needs the listen socket")
        passed = [self.listener.fileno()]

        def slot(descriptor: int) -> int:
            passed.append(descriptor)
            return LISTEN_FD + len(passed) - 1

        record: dict[str, Any] = {
            "connections": [
                [slot(sock.fileno()), base64.b64encode(received).decode("ascii")]
                for sock, received in self.connections
            ],
            "workers": [[w.pid, w.number, slot(w.heartbeat)] for w in self.workers],
            "watched": list(self.watched),
            "debugger_failures": self.debugger_failures,
        }
        if self.evented is not None:
            record["evented"] = [slot(self.evented.sock.fileno()), list(self.evented.pids)]
        if self.own_channel is not None:
            record["own_channel"] = [slot(end.fileno()) for end in self.own_channel]
        if self.image:
            record["image"] = self.image
        if self.history:
            record["history"] = self.history
        if self.reload is not None:
            timing = self.reload
            record["reload"] = [
                timing.cause,
                timing.first_seen,
                timing.decided,
                timing.exec_at,
                timing.kind,
                sorted(timing.paths),
            ]
        return passed, record

    @classmethod
    def decode(
        cls, environ: MutableMapping[str, str] | None = None, pid: int | None = None
    ) -> Handover:
        """What the previous image (or systemd: a listen socket only) handed to this process
        (``pid``), taken out of the environment so that neither the app nor a child sees it.
        A malformed record is logged and left out: the image starts afresh instead."""
        environ = os.environ if environ is None else environ
        listener = _adopt_listener(environ, os.getpid() if pid is None else pid)
        value = environ.pop(HANDOVER_ENV, "")
        if listener is None or not value:  # none, or another process's
            return cls(listener=listener)
        try:
            return _parse(json.loads(value), listener, _descriptor)
        except (ValueError, TypeError, KeyError, IndexError, OSError) as error:
            _logger.warning("the previous image's hand-over is malformed (%s): ignored", error)
            return cls(listener=listener)

    @classmethod
    def from_record(
        cls, record: dict[str, Any], descriptors: Sequence[int], listener: socket.socket
    ) -> Handover:
        """What :meth:`to_record` gave, with the descriptors received in slot order (the
        first, the sender's listen socket, is closed: ``listener`` is this process's)."""
        os.close(descriptors[0])

        def received(slot: object) -> int:
            if not isinstance(slot, int) or not LISTEN_FD < slot < LISTEN_FD + len(descriptors):
                raise ValueError(f"{slot!r} is not a handed descriptor")
            return descriptors[slot - LISTEN_FD]

        return _parse(record, listener, received)


def _adopt_listener(environ: MutableMapping[str, str], pid: int) -> socket.socket | None:
    """The listen socket on ``LISTEN_FD``, when ``LISTEN_PID`` names this process."""
    if environ.get("LISTEN_PID") != str(pid):
        return None
    count = environ.pop("LISTEN_FDS", "")
    environ.pop("LISTEN_PID", None)
    environ.pop("LISTEN_FDNAMES", None)
    if count != "1":
        _logger.warning("LISTEN_FDS=%s: devserve adopts exactly one socket; binding instead", count)
        return None
    sock = socket.socket(fileno=LISTEN_FD)
    os.set_inheritable(LISTEN_FD, False)
    return sock


def _parse(
    record: dict[str, Any], listener: socket.socket, descriptor: Callable[[object], int]
) -> Handover:
    """The record read whole first (every value checked, no descriptor used twice), and
    only then are descriptors wrapped: a malformed record leaves none half-adopted."""
    reload = None
    if "reload" in record:
        cause, first_seen, decided, exec_at, kind, paths = record["reload"]
        reload = Reload(
            str(cause),
            float(first_seen),
            float(decided),
            float(exec_at),
            str(kind),
            frozenset(str(path) for path in paths),
        )
    connections = [
        (descriptor(slot), base64.b64decode(received, validate=True))
        for slot, received in record["connections"]
    ]
    workers = [(int(pid), int(number), descriptor(slot)) for pid, number, slot in record["workers"]]
    evented = None
    if "evented" in record:
        slot, pids = record["evented"]
        evented = (descriptor(slot), tuple(int(pid) for pid in pids))
    own = [descriptor(slot) for slot in record.get("own_channel", [])]
    if own and len(own) != 2:
        raise ValueError("the streams' channel is a pair of descriptors")
    watched = [str(folder) for folder in record["watched"]]
    failures = int(record["debugger_failures"])
    history = record.get("history", [])
    if not isinstance(history, list) or not all(isinstance(item, dict) for item in history):
        raise ValueError("the reloads' history is not a list of records")
    used = [fd for fd, _ in connections] + [fd for *_, fd in workers] + own
    used += [evented[0]] if evented else []
    if len(set(used)) != len(used):
        raise ValueError("a descriptor is handed twice")
    return Handover(
        listener=listener,
        reload=reload,
        connections=[(_socket(fd), received) for fd, received in connections],
        workers=[HandedWorker(pid, number, _pipe(fd)) for pid, number, fd in workers],
        evented=HandedChildren(_socket(evented[0]), evented[1]) if evented else None,
        own_channel=(_socket(own[0]), _socket(own[1])) if own else None,
        image=str(record.get("image", "")),
        history=history,
        watched=watched,
        debugger_failures=failures,
    )


def _socket(descriptor: int) -> socket.socket:
    sock = socket.socket(fileno=descriptor)
    sock.set_inheritable(False)
    return sock


def _pipe(fd: int) -> int:
    os.set_inheritable(fd, False)
    os.set_blocking(fd, False)
    return fd


def _descriptor(value: object) -> int:
    if not isinstance(value, int) or value <= LISTEN_FD:
        raise ValueError(f"{value!r} is not a handed descriptor")
    return value


@contextlib.contextmanager
def _gap_signals_blocked() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, GAP_SIGNALS)
    try:
        yield
    finally:  # only reached when the exec failed
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def reexec(handover: Handover) -> NoReturn:
    """Replace this process with a fresh image of itself: same PID, same command line, same
    interpreter options, and what ``handover`` holds (see :class:`Handover`): the listen
    socket, the connections not served yet, the prefork workers (which serve on meanwhile),
    the evented child's socket."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    execv: Callable[[str, list[str]], NoReturn] = os.execv
    if "debugpy" in sys.modules:
        execv = release_debugpy(argv)
    with _gap_signals_blocked():
        logging.shutdown()  # flush the log before the image goes
        if handover.reload is not None:
            exec_at = time.monotonic()
            handover = replace(
                handover, reload=replace(handover.reload, exec_at=exec_at, kind="exec")
            )
        passed, variables = handover.encode()
        # First out of the way (above every target number), then onto 3, 4, 5...
        above = LISTEN_FD + len(passed)
        high = [fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, above) for descriptor in passed]
        for target, descriptor in enumerate(high, start=LISTEN_FD):
            os.dup2(descriptor, target, inheritable=True)
        os.environ.update(variables)
        # Close every other descriptor we may have leaked (inotify's is not close-on-exec).
        os.closerange(LISTEN_FD + len(passed), _max_fd())
        execv(sys.executable, argv)
    raise AssertionError("unreachable")  # pragma: no cover


# --- reloading under debugpy ---


def debugpy_listen_port(argv: Sequence[str]) -> int | None:
    """The port of ``python -m debugpy --listen [HOST:]PORT ...``, if that started us."""
    if "debugpy" not in argv or "--listen" not in argv:
        return None
    index = argv.index("--listen")
    if index + 1 >= len(argv) or argv.index("debugpy") > index:
        return None
    port = argv[index + 1].rpartition(":")[2]
    return int(port) if port.isdigit() else None


def release_debugpy(argv: Sequence[str]) -> Callable[[str, list[str]], NoReturn]:
    """Make way for the next image's debugger; the exec function to use.

    Started as ``python -m debugpy --listen PORT ...`` (an IDE's launch or attach set-up),
    the process has a debug adapter: a separate, daemonized process that owns PORT and
    outlives us. The next image runs the same command line and starts its own adapter on
    PORT, so this one is stopped first (an attached IDE sees the session end, and attaches
    again to the new image, as after any restart). pydevd also rewrites ``os.execv`` to
    make child processes debuggable through the old adapter: the exec must bypass it."""
    port = debugpy_listen_port(argv)
    if port is not None:
        _stop_debug_adapter(port)
        os.environ.pop("DEBUGPY_RUNNING", None)  # set, it would keep the next from listening
    execv: Callable[[str, list[str]], NoReturn] = getattr(os, "original_execv", os.execv)
    return execv


def _stop_debug_adapter(port: int) -> None:
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        is_adapter = any(part.endswith(("debugpy/adapter", "debugpy.adapter")) for part in cmdline)
        if is_adapter and "--for-server" in cmdline and _option(cmdline, "--port") == str(port):
            with contextlib.suppress(psutil.Error):
                process.kill()  # a relay with nothing to save; TERM takes it seconds
                _wait_dead(process)


def _wait_dead(process: Any) -> None:
    """Until the process is gone or a zombie (its port is free then): not its parent, we
    cannot reap it, and who does may be slow."""
    import psutil

    deadline = time.monotonic() + ADAPTER_STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)


def _option(cmdline: Sequence[str], name: str) -> str | None:
    if name in cmdline:
        index = cmdline.index(name)
        return cmdline[index + 1] if index + 1 < len(cmdline) else None
    return None


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536
