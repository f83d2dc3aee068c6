"""A prefork worker process: accepts on the listen socket it shares with the other workers
and serves one connection at a time, until told to stop (TERM), recycled (its request count
or soft memory limit), past its CPU limit, or orphaned. It tells its master it lives through
a heartbeat pipe (the protocol is here: :data:`READY`, :data:`ALIVE`, and the folders of
modules it imported on a request, which the master watches; :func:`read_heartbeats` is the
master's side).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from devserve import limits as resource_limits
from devserve._engine.children import orphaned
from devserve._engine.connection import HTTPConnection
from devserve._engine.scoreboard import Scoreboard
from devserve._engine.wire import HEAD_TIMEOUT, RequestInfo, ServerInfo, close_connection

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["ALIVE", "READY", "WorkerProcess", "read_heartbeats"]

_logger = logging.getLogger("devserve.prefork")

READY = b"r"  # a worker's first heartbeat: it accepts from now on
ALIVE = b"."  # every loop turn and after each request
# Then the folders of modules a worker imported on a request, \0-separated, then END.
IMPORTED, IMPORTED_END = b"\x1e", b"\x1f"
HEARTBEAT_EVERY = 1.0  # seconds between an idle worker's heartbeats (at most)
PASS_TIMEOUT = 1.0  # seconds to pass a connection to the master (its loop reads at once)


def read_heartbeats(data: bytes) -> tuple[bytes, list[str], bytes]:
    """What a worker wrote: its heartbeats, the folders it reported, and the start of a
    report not complete yet (to be read again with what comes next)."""
    beats = b""
    folders: list[str] = []
    while (start := data.find(IMPORTED)) >= 0:
        end = data.find(IMPORTED_END, start)
        if end < 0:
            return beats + data[:start], folders, data[start:]
        beats += data[:start]
        folders += [f for f in data[start + 1 : end].decode(errors="replace").split("\0") if f]
        data = data[end + 1 :]
    return beats + data, folders, b""


class WorkerProcess:
    """A worker: accepts connections and serves them one at a time until told to stop,
    recycled, or past a limit."""

    def __init__(
        self,
        app: WSGIApplication,
        listener: socket.socket,
        number: int,
        heartbeat: int,
        limits: resource_limits.Limits,
        master_pid: int,
        max_body: int = ServerInfo.max_body,
        report_roots: Iterable[str] = (),
        follow_imports: bool = False,
        adopter: int | None = None,
        to_master: socket.socket | None = None,
        own_paths: frozenset[str] = frozenset(),
        scoreboard: Scoreboard | None = None,
    ) -> None:
        self.app = app
        self.listener = listener
        self.number = number
        self.heartbeat = heartbeat
        self.limits = limits
        self.master_pid = master_pid
        self.adopter = adopter  # who may adopt it when the master goes (the warm parent)
        host, port = listener.getsockname()[:2]
        # devserve's own routes: such a connection is passed to the master, which holds it.
        self.to_master = to_master
        self.server_info = ServerInfo(
            host,
            port,
            multiprocess=True,
            keep_alive=False,
            max_body=max_body,
            own_paths=own_paths if to_master is not None else frozenset(),
            to_loop=self._pass if to_master is not None else None,
        )
        self.scoreboard = scoreboard  # where this worker writes what it serves (the status)
        self.stopping = False
        self.served = 0
        self._last_beat = 0.0
        # Well within --limit-time-real, so an idle worker is never taken for a stuck one.
        self.heartbeat_every = min(HEARTBEAT_EVERY, (limits.time_real or HEARTBEAT_EVERY) / 4)
        self.report_roots = report_roots
        self.follow_imports = follow_imports  # report the folders of new imports
        self._known = list(report_roots)  # the folders the master knows of
        self._modules = len(sys.modules)
        self._wake_read = self._wake_write = -1  # made in the child: the master has no use

    def stop(self) -> None:
        """TERM: the request under way finishes, then the worker exits."""
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"\0")

    def run(self) -> int:
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._install_signals()
        resource_limits.set_memory_hard(self.limits.memory_hard)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._beat(READY)
        while not self.stopping:
            self._beat(ALIVE)
            try:  # under load a connection is waiting: no need to ask the selector first
                connection, client = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError, InterruptedError):
                selector.select(self.heartbeat_every)  # idle: wait for one (or a signal)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
                if orphaned(self.master_pid, self.adopter):
                    _logger.warning("worker #%d: the master is gone; exiting", self.number)
                    break
                continue
            except OSError:  # the master shut the listen socket down: stopping
                break
            self._serve(connection, client)
            if self._over_limits():
                break
        return 0

    def _serve(self, connection: socket.socket, client: Any) -> None:
        thread = threading.current_thread()

        def track(info: RequestInfo | None) -> None:
            thread.request = info  # type: ignore[attr-defined]
            if self.scoreboard is not None:
                self.scoreboard.write(self.number, info, self.served + (info is None))

        resource_limits.arm_cpu_limit(self.limits.time_cpu)
        http = HTTPConnection(connection, client, self.app, self.server_info, track)
        try:
            connection.settimeout(HEAD_TIMEOUT)  # then the handler's own timeouts
            http.serve()
        except Exception:
            _logger.exception("unexpected error while serving %s", client)
        finally:
            close_connection(connection, http.unread)
        self.served += 1
        self._beat(ALIVE)
        if self.follow_imports and len(sys.modules) != self._modules:
            self._report_imports()

    def _pass(self, fd: int, target: str) -> None:
        """A connection the master answers (an event stream): its descriptor goes to the
        master's loop, with the request's target. A master gone (a reload under way): the
        connection closes, and the browser comes back to the next one."""
        assert self.to_master is not None
        try:
            self.to_master.settimeout(PASS_TIMEOUT)
            socket.send_fds(self.to_master, [target.encode("latin-1")], [fd])
        except OSError:
            pass
        finally:
            os.close(fd)

    def _report_imports(self) -> None:
        """The request imported modules (views a URL conf loads lazily...): tell the master
        their folders, which it watches."""
        from devserve import project

        self._modules = len(sys.modules)
        new = [
            folder
            for folder in project.module_roots()
            if not any(folder == known or project.inside(folder, known) for known in self._known)
        ]
        if new:
            self._known += new
            with contextlib.suppress(OSError):
                os.write(self.heartbeat, IMPORTED + "\0".join(new).encode() + IMPORTED_END)

    def _over_limits(self) -> bool:
        if self.limits.request and self.served >= self.limits.request:
            _logger.info(
                "worker #%d served %d requests (--limit-request): recycled",
                self.number,
                self.served,
            )
            return True
        resident = self.limits.over_memory_soft()
        if resident is not None:
            _logger.info(
                "worker #%d uses %.0f MiB (--limit-memory-soft %d): recycled",
                self.number,
                resident,
                self.limits.memory_soft,
            )
            return True
        return False

    def _beat(self, what: bytes) -> None:
        """Tell the master this worker lives, at most twice a second (a write per request
        would wake the master as often)."""
        now = time.monotonic()
        if what == ALIVE and now - self._last_beat < self.heartbeat_every / 2:
            return
        self._last_beat = now
        with contextlib.suppress(OSError):  # a full pipe: the master knows we live
            os.write(self.heartbeat, what)

    def _install_signals(self) -> None:
        """The worker's own, beside the child signal table: USR1/USR2 report its caches,
        XCPU (past --limit-time-cpu) ends it."""
        reporter: list[Any] = []

        def report(signum: int, frame: Any) -> None:
            from devserve import debug

            if not reporter:
                reporter.append(debug.CacheReporter(self.report_roots))
            reporter[0].request(signum == signal.SIGUSR2)

        def out_of_cpu(signum: int, frame: Any) -> None:
            _logger.error(
                "worker #%d: CPU time limit reached (--limit-time-cpu %g); exiting",
                self.number,
                self.limits.time_cpu,
            )
            os._exit(1)

        signal.signal(signal.SIGUSR1, report)
        signal.signal(signal.SIGUSR2, report)
        signal.signal(signal.SIGXCPU, out_of_cpu)
