"""Phoenix reload: the process re-execs itself in place and keeps its listen socket.

Before the exec (:func:`reexec`) the server has stopped accepting and drained its requests;
the signals that could arrive in the exec gap are blocked (the mask survives exec, and the
new image unblocks them once its handlers are installed); the listen socket moves to fd 3,
inheritable, announced by ``LISTEN_FDS=1``/``LISTEN_PID=<pid>`` as systemd does; every other
descriptor is closed (inotify watches included). The new image finds the socket with
:func:`adopt_socket`, so connections that arrive meanwhile wait in the kernel backlog.

The same adoption serves systemd socket activation.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "GAP_SIGNALS",
    "FileChanges",
    "Reload",
    "adopt_connections",
    "adopt_socket",
    "check_syntax",
    "describe_paths",
    "discard_bytecode",
    "error_app",
    "prepare_reload",
    "reexec",
    "reload_started",
    "traceback_files",
]

_logger = logging.getLogger(__name__)

LISTEN_FD = 3  # the first descriptor systemd passes (SD_LISTEN_FDS_START)
RELOAD_ENV = "DEVSERVE_RELOADING"  # "<first_seen> <decided> <exec_at> <what changed>"
# "4,5:<base64>": connections handed over by a reload, with what was read of their request
CONNECTIONS_ENV = "DEVSERVE_CONNECTION_FDS"
ADAPTER_STOP_TIMEOUT = 3.0  # seconds for debugpy's adapter to end before a reload goes on
EVENTED_ENV = "DEVSERVE_EVENTED"  # "<socket fd>:<pid>,...": a prefork master's evented child
WORKERS_ENV = "DEVSERVE_WORKER_FDS"  # "<pid>:<number>:<heartbeat fd>,...": prefork workers
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
    exec_at: float = 0.0  # drained: the exec

    def summary(self, ready: float) -> str:
        """``hello/controllers.py (settle 27 + drain 0 + restart 96)``, in milliseconds."""

        def ms(start: float, end: float) -> int:
            return round((end - start) * 1000)

        return (
            f"{self.cause} (settle {ms(self.first_seen, self.decided)} + drain "
            f"{ms(self.decided, self.exec_at)} + restart {ms(self.exec_at, ready)})"
        )


def describe_paths(paths: Iterable[str], limit: int = 3) -> str:
    """``addons/hello/controllers.py and 2 more``, relative to the current folder."""
    cwd = os.getcwd()
    shown = sorted(os.path.relpath(p, cwd) if p.startswith(cwd + os.sep) else p for p in paths)
    text = ", ".join(shown[:limit])
    if len(shown) > limit:
        text += f" and {len(shown) - limit} more"
    return text


def check_syntax(paths: Iterable[str]) -> list[str]:
    """Compile every changed Python file, writing the bytecode the next image will load;
    one message per syntax error (file, line, the offending source line). Deleted files
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


def _syntax_problem(path: str, error: BaseException) -> str:
    if isinstance(error, SyntaxError):
        line = (error.text or "").strip()
        return f"{describe_paths([path])}, line {error.lineno}: {error.msg}\n    {line}"
    return f"{describe_paths([path])}: {error}"  # e.g. null bytes


def prepare_reload(changes: FileChanges) -> bool:
    """Whether a batch of changes may reload: not while a changed file has a syntax error
    (logged; the old code keeps serving)."""
    problems = check_syntax(changes.paths)
    for problem in problems:
        _logger.error("not reloading, syntax error in %s", problem)
    return not problems


def discard_bytecode(paths: Iterable[str]) -> None:
    """Remove the cached bytecode of changed files (when devserve cannot rewrite it)."""
    import importlib.util

    for path in paths:
        if not path.endswith(".py"):
            continue
        for optimization in ("", 1, 2):
            with contextlib.suppress(OSError, ValueError):
                os.unlink(importlib.util.cache_from_source(path, optimization=optimization))


def adopt_socket() -> socket.socket | None:
    """The listen socket handed over by the previous image or by systemd, if any is
    addressed to this process. The variables are removed so children don't adopt it."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = os.environ.pop("LISTEN_FDS", "")
    os.environ.pop("LISTEN_PID", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if count != "1":
        _logger.warning("LISTEN_FDS=%s: devserve adopts exactly one socket; binding instead", count)
        return None
    sock = socket.socket(fileno=LISTEN_FD)
    os.set_inheritable(LISTEN_FD, False)
    return sock


def reload_started() -> Reload | None:
    """When this image is the result of a reload: what changed, and when each step began."""
    value = os.environ.pop(RELOAD_ENV, None)
    if not value:
        return None
    try:
        first_seen, decided, exec_at, cause = value.split(" ", 3)
        return Reload(cause, float(first_seen), float(decided), float(exec_at))
    except ValueError:
        return None


@contextlib.contextmanager
def _gap_signals_blocked() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, GAP_SIGNALS)
    try:
        yield
    finally:  # only reached when the exec failed
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def reexec(
    listener: socket.socket,
    reload: Reload,
    connections: Iterable[tuple[socket.socket, bytes]] = (),
    workers: Iterable[Any] = (),
    evented: tuple[socket.socket, list[int]] | None = None,
) -> NoReturn:
    """Replace this process with a fresh image of itself: same PID, same command line,
    same interpreter options, same listen socket; accepted connections whose request was
    not served yet go along (fds 4, 5, ... listed in ``DEVSERVE_CONNECTION_FDS``, each with
    the start of its request head when one was read), and so do
    prefork workers, which serve on meanwhile (their heartbeat pipes next, listed with their
    PIDs in ``DEVSERVE_WORKER_FDS``), and the prefork master's evented-child socket last,
    with the PIDs of its children, in ``DEVSERVE_EVENTED``."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    execv: Callable[[str, list[str]], NoReturn] = os.execv
    if "debugpy" in sys.modules:
        execv = release_debugpy(argv)
    workers = list(workers)
    connections = list(connections)
    with _gap_signals_blocked():
        logging.shutdown()  # flush the log before the image goes
        # First out of the way (above every target number), then onto 3, 4, 5...
        passed = [sock.fileno() for sock in (listener, *(c for c, _ in connections))]
        passed += [worker.heartbeat for worker in workers]
        if evented is not None:
            passed.append(evented[0].fileno())
        above = LISTEN_FD + len(passed)
        high = [fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, above) for descriptor in passed]
        for target, descriptor in enumerate(high, start=LISTEN_FD):
            os.dup2(descriptor, target, inheritable=True)
        after_heartbeats = LISTEN_FD + 1 + len(connections) + len(workers)
        heartbeats = range(after_heartbeats - len(workers), after_heartbeats)
        extra = ",".join(
            f"{fd}:{base64.b64encode(received).decode()}" if received else str(fd)
            for fd, (_, received) in enumerate(connections, start=LISTEN_FD + 1)
        )
        numbered = zip(workers, heartbeats, strict=True)
        listed = ",".join(f"{w.pid}:{w.number}:{fd}" for w, fd in numbered)
        child = f"{after_heartbeats}:{','.join(map(str, evented[1]))}" if evented else ""
        timing = f"{reload.first_seen} {reload.decided} {time.monotonic()} {reload.cause}"
        os.environ.update(
            LISTEN_FDS="1",
            LISTEN_PID=str(os.getpid()),
            **{RELOAD_ENV: timing, CONNECTIONS_ENV: extra, WORKERS_ENV: listed, EVENTED_ENV: child},
        )
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


def adopt_workers() -> list[tuple[int, int, int]]:
    """The prefork workers of the previous image, still serving: (pid, number, heartbeat
    fd) for each one that is still our child."""
    listed = os.environ.pop(WORKERS_ENV, "")
    workers = []
    for item in filter(None, listed.split(",")):
        try:
            pid, number, descriptor = (int(part) for part in item.split(":"))
        except ValueError:
            continue
        with contextlib.suppress(OSError):
            os.set_inheritable(descriptor, False)
            os.set_blocking(descriptor, False)
            workers.append((pid, number, descriptor))
    return workers


def adopt_evented() -> tuple[socket.socket | None, list[int]]:
    """A prefork master's evented-child socket from the previous image, with the PIDs of
    the children still running there (this image starts its own; those are retired)."""
    descriptor, _, pids = os.environ.pop(EVENTED_ENV, "").partition(":")
    if not descriptor.isdigit():
        return None, []
    sock = socket.socket(fileno=int(descriptor))
    sock.set_inheritable(False)
    return sock, [int(pid) for pid in pids.split(",") if pid.isdigit()]


def adopt_connections() -> list[tuple[socket.socket, bytes]]:
    """The connections the previous image accepted but did not serve, each with what was
    read of its request."""
    listed = os.environ.pop(CONNECTIONS_ENV, "")
    connections = []
    for item in filter(None, listed.split(",")):
        descriptor, _, encoded = item.partition(":")
        try:
            received = base64.b64decode(encoded, validate=True)
            connection = socket.socket(fileno=int(descriptor))
        except (ValueError, OSError):
            continue
        connection.set_inheritable(False)
        connections.append((connection, received))
    return connections


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536


# --- broken code never kills the server ---


def traceback_files(error: BaseException) -> list[str]:
    """The source files named in an exception's traceback (and a SyntaxError's file)."""
    files = []
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, SyntaxError) and current.filename:
            files.append(current.filename)
        files.extend(frame.filename for frame in traceback.extract_tb(current.__traceback__))
        current = current.__cause__
    return sorted({f for f in files if os.path.isfile(f)})


def error_app(error: BaseException) -> WSGIApplication:
    """Answers every request with a 500 showing why the app failed to load."""
    cause = error.__cause__ or error
    details = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    summary = str(error)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        if "text/html" in environ.get("HTTP_ACCEPT", ""):
            import html

            body = _ERROR_PAGE.format(
                summary=html.escape(summary), details=html.escape(details)
            ).encode()
            content_type = "text/html; charset=utf-8"
        else:
            body = (
                f"{summary}\n\n{details}\ndevserve reloads when a watched file changes.\n".encode()
            )
            content_type = "text/plain; charset=utf-8"
        start_response(
            "500 Internal Server Error",
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>App failed to load</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}
pre{{background:#fee;padding:1rem;overflow:auto}}</style></head>
<body><h1>The app failed to load</h1><p>{summary}</p><pre>{details}</pre>
<p>devserve is watching: save a fix and reload this page.</p></body></html>
"""
