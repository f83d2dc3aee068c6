"""Prefork mode (``--workers N``): one master process and N worker processes that accept
on the shared listen socket, each serving one request at a time, as Odoo and gunicorn do.

The master loads the app once and forks the workers. It never serves: its control loop
(shared with the threaded server) handles signals, reaps and respawns workers, watches their
heartbeats for the real-time limit, and reloads. A reload re-execs the master in place while
its workers go on serving; the new image adopts them (their PIDs and heartbeat pipes are
passed along), forks new workers with the new code, and retires the old ones once the new
ones are ready: no request fails. If the new code does not load, the old workers stay.

A worker enforces its own limits: RLIMIT_AS (hard memory), RLIMIT_CPU re-armed per request,
the request count and the soft memory limit (it exits after the request, and the master
starts another).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from devserve import limits as resource_limits
from devserve._engine.children import describe_exit, set_title
from devserve._engine.connection import HTTPConnection
from devserve._engine.wire import HEAD_TIMEOUT, RequestInfo, ServerInfo, close_connection
from devserve.reloader import GAP_SIGNALS, FileChanges
from devserve.servers import ControlLoop, Outcome, capture_signals

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from devserve._engine.children import EventedChild
    from devserve.cron import Job

__all__ = ["PreforkServer", "Worker", "WorkerProcess"]

_logger = logging.getLogger("devserve.prefork")

READY = b"r"  # a worker's first heartbeat: it accepts from now on
ALIVE = b"."  # every loop turn and after each request
# Then the folders of modules a worker imported on a request, \0-separated, then END.
IMPORTED, IMPORTED_END = b"\x1e", b"\x1f"
HEARTBEAT_EVERY = 1.0  # seconds between an idle worker's heartbeats (at most)
KILL_AFTER_QUIT = 3.0  # a worker past --limit-time-real: QUIT (its stack), then KILL
BOOT_FAILURES_TOLERATED = 3  # workers dying before ready in a row: then back off
MAX_BACKOFF = 30.0

FORWARDED_SIGNALS = (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
WORKER_SIGNALS = {*GAP_SIGNALS, signal.SIGCHLD, signal.SIGXCPU}


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


@dataclasses.dataclass(eq=False)
class Worker:
    """A worker process as the master sees it."""

    pid: int
    number: int  # 1..N, reused: "worker #2"
    heartbeat: int  # the read end of its heartbeat pipe
    last_seen: float  # time.monotonic() of its last heartbeat
    ready: bool = False
    retiring: bool = False  # sent TERM: it ends after its request
    quit_at: float = 0.0  # past the real-time limit: when QUIT was sent (KILL follows)
    gone: bool = False  # reaped: its heartbeat pipe is closed
    unread: bytes = b""  # the start of a message whose end has not come yet

    def describe(self) -> str:
        return f"worker #{self.number} (pid {self.pid})"


class PreforkServer(ControlLoop):
    """The master: forks, supervises and reloads the workers."""

    mode = "prefork"

    def __init__(
        self,
        app: WSGIApplication,
        sock: socket.socket,
        *,
        workers: int,
        limits: resource_limits.Limits,
        shutdown_grace: float = 5.0,
        reload_grace: float = 5.0,
        on_changes: Callable[[FileChanges], frozenset[str]] | None = None,
        signal_actions: Mapping[int, Callable[[], None]] | None = None,
        adopted: Iterable[Worker] = (),
        keep_adopted: bool = False,
        max_body: int = ServerInfo.max_body,
        report_roots: Iterable[str] = (),
        evented: EventedChild | None = None,
        cron_jobs: Iterable[Job] = (),
        cron_workers: int = 0,
        cron_time_limit: float = 0.0,
        on_imported: Callable[[list[str]], None] | None = None,
    ) -> None:
        super().__init__(
            sock,
            shutdown_grace=shutdown_grace,
            reload_grace=reload_grace,
            on_changes=on_changes,
            signal_actions=signal_actions,
        )
        self.app = app
        self.max_body = max_body
        self.report_roots = list(report_roots)  # where a worker's cache report looks
        # Told the folders of modules a worker imported on a request (workers report them
        # only when it is set).
        self.on_imported = on_imported
        self.target = workers
        self.limits = limits
        self.served_first = threading.Event()  # a first worker is ready (starts the watcher)
        self.workers: dict[int, Worker] = {}  # pid -> the workers of this image's code
        self.old: dict[int, Worker] = {}  # the previous image's, retired once ours are ready
        self.worker_handover: list[Worker] = []  # after a reload: for the next image
        self.evented = evented  # --gevent-port's evented child
        # Cron workers: one per slot, each running its own share of the jobs, so a job never
        # runs in two processes; a slot is filled again only once its holder has exited.
        from devserve import cron

        jobs = list(cron_jobs)
        self.cron_parts = cron.partition(jobs, min(cron_workers, len(jobs))) if jobs else []
        self.cron_time_limit = cron_time_limit
        self.cron: dict[int, int] = {}  # pid -> slot
        self._cron_retiring: set[int] = set()
        self._cron_spawn_after = 0.0
        self.evented_handover: tuple[socket.socket, list[int]] | None = None
        self._boot_failures = 0
        self._spawn_after = 0.0  # backing off from workers that die at start
        self._master_pid = os.getpid()
        for worker in adopted:
            # The new code failed to load: the old workers go on serving the old code.
            (self.workers if keep_adopted else self.old)[worker.pid] = worker
            self._selector.register(worker.heartbeat, selectors.EVENT_READ, worker)
        if keep_adopted:
            self.served_first.set()

    @property
    def description(self) -> str:
        evented = f" + evented child on port {self.evented.port}" if self.evented else ""
        return f"prefork, {self.target} workers{evented}"

    # --- the loop ---

    def run(self, on_ready: Callable[[], None] | None = None) -> Outcome:
        set_title("master")
        with capture_signals((*GAP_SIGNALS, signal.SIGCHLD), self.notify, self._reloading):
            if on_ready is not None:
                on_ready()
            while self._outcome is None:
                self._maintain()
                self._step(HEARTBEAT_EVERY)
            self._let_writes_settle()
            if self._outcome is Outcome.RELOAD:
                # The workers serve on through the exec; the next image adopts them.
                self.worker_handover = [*self.workers.values(), *self.old.values()]
                if self.evented is not None:  # restarted by the next image, on new code
                    self.evented.retire()
                    self.evented_handover = self.evented.handover()
                # Before the exec: the next image's cron workers must not overlap these.
                self._stop_children(self.reload_grace, only_cron=True)
                signal.pthread_sigmask(signal.SIG_BLOCK, GAP_SIGNALS)
            else:
                self._stop_workers()
        return self._outcome

    def _step(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data == "wake":
                self._handle_events()
            else:
                self._heard(key.data)

    def _heard(self, worker: Worker) -> None:
        if worker.gone:  # reaped earlier in the same batch of events
            return
        try:
            data = os.read(worker.heartbeat, 4096)
        except OSError:
            data = b""
        if not data:  # the worker is gone: reaping will tell
            self._selector.unregister(worker.heartbeat)
            return
        worker.last_seen = time.monotonic()
        beats, folders, worker.unread = read_heartbeats(worker.unread + data)
        if folders and self.on_imported is not None:
            self.on_imported(folders)
        if READY in beats and not worker.ready:
            worker.ready = True
            self._boot_failures = 0
            self.served_first.set()

    def handle_event(self, event: Any) -> None:
        if event in FORWARDED_SIGNALS:
            self._forward(event)
            if event != signal.SIGQUIT:
                return  # each worker reports its own caches; the master serves nothing
        super().handle_event(event)

    def handle_mode_event(self, event: Any) -> None:
        if event == signal.SIGCHLD:
            self._reap()
        elif event == signal.SIGTTIN and self._outcome is None:
            self.target += 1
            _logger.info("TTIN: %d workers", self.target)
        elif event == signal.SIGTTOU and self._outcome is None:
            if self.target > 1:
                self.target -= 1
                _logger.info("TTOU: %d workers", self.target)
            else:
                _logger.info("TTOU ignored: one worker is the minimum")

    def _forward(self, signum: int) -> None:
        for worker in [*self.workers.values(), *self.old.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)
        if self.evented is not None:
            self.evented.signal(signum)
        for pid in self.cron:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # --- keeping N workers ---

    def _maintain(self) -> None:
        self._handle_events()  # a stop signalled meanwhile: no worker is started for nothing
        if self._outcome is not None:
            return
        self._reap()
        now = time.monotonic()
        self._retire_extra()
        if now >= self._spawn_after:
            while len(self._serving()) < self.target and self._outcome is None:
                self._spawn()
        if self.old and len([w for w in self._serving() if w.ready]) >= self.target:
            self._retire_old()
        if self.evented is not None:
            self.evented.maintain(now)
        if now >= self._cron_spawn_after:
            held = set(self.cron.values())
            for slot in range(len(self.cron_parts)):
                if slot not in held:
                    self._spawn_cron(slot)
        self._check_time_limits(now)

    def _serving(self) -> list[Worker]:
        return [worker for worker in self.workers.values() if not worker.retiring]

    def _retire_extra(self) -> None:
        serving = sorted(self._serving(), key=lambda worker: worker.number)
        for worker in serving[self.target :]:
            _logger.info("retiring %s", worker.describe())
            self._terminate(worker)

    def _retire_old(self) -> None:
        serving = [worker for worker in self.old.values() if not worker.retiring]
        if serving:
            _logger.info(
                "new workers ready: retiring %d worker(s) of the previous code", len(serving)
            )
        for worker in serving:
            self._terminate(worker)

    def _terminate(self, worker: Worker) -> None:
        worker.retiring = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)

    def _fork(self, child: Callable[[], int], what: str, keep: int | None = None) -> int:
        """Fork a child that runs ``child()`` and exits with its code; returns its PID. The
        master's descriptors are closed in the child, except ``keep``."""
        # Blocked until the child has its own handlers: the master's, inherited, would
        # swallow a TERM sent to it meanwhile.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            return pid
        code = 1
        try:
            self._selector.close()  # the master's; the child has its own
            for descriptor in (
                self._wake_read,
                self._wake_write,
                *(w.heartbeat for w in [*self.workers.values(), *self.old.values()]),
            ):
                if descriptor != keep:
                    os.close(descriptor)  # the master's business, not the child's
            code = child()
        except BaseException:
            _logger.exception("%s failed", what)
        finally:
            os._exit(code)

    def _spawn(self) -> None:
        taken = {worker.number for worker in self.workers.values()}
        number = next(n for n in range(1, len(taken) + 2) if n not in taken)
        read_end, write_end = os.pipe()

        def work() -> int:
            os.close(read_end)
            return WorkerProcess(
                self.app,
                self.listener,
                number,
                write_end,
                self.limits,
                self._master_pid,
                self.max_body,
                self.report_roots,
                follow_imports=self.on_imported is not None,
            ).run()

        pid = self._fork(work, f"worker #{number}")
        os.close(write_end)
        os.set_blocking(read_end, False)
        worker = Worker(pid, number, read_end, last_seen=time.monotonic())
        self.workers[pid] = worker
        self._selector.register(read_end, selectors.EVENT_READ, worker)

    def _spawn_cron(self, slot: int) -> None:
        from devserve import cron

        def work() -> int:
            self.listener.close()  # a cron worker serves no request
            set_title(f"cron worker #{slot + 1} [{os.getpid()}]")
            return cron.run_worker(
                self.cron_parts[slot], slot + 1, self._master_pid, self.cron_time_limit
            )

        pid = self._fork(work, f"cron worker #{slot + 1}")
        self.cron[pid] = slot

    def _cron_gone(self, pid: int, code: int) -> None:
        slot = self.cron.pop(pid)
        if pid in self._cron_retiring or self._outcome is not None:
            self._cron_retiring.discard(pid)
            return
        how = describe_exit(code)
        _logger.warning("cron worker #%d died (%s); starting another", slot + 1, how)
        self._cron_spawn_after = time.monotonic() + 1.0  # never a fork loop

    def _stop_children(self, grace: float, only_cron: bool = False) -> None:
        """TERM the cron workers (and, unless ``only_cron``, every other child), wait up to
        ``grace`` (a second INT/TERM ends the wait), then KILL what is left."""
        if not only_cron:
            for worker in [*self.workers.values(), *self.old.values()]:
                self._terminate(worker)
            if self.evented is not None:
                self.evented.retire()
        for pid in self.cron:
            self._cron_retiring.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

        def waiting() -> bool:
            return bool(self.cron) if only_cron else self._children()

        deadline = time.monotonic() + grace
        while waiting() and self._outcome is not Outcome.FORCED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._step(min(remaining, 0.1))
            self._reap()
        left = [] if only_cron else [*self.workers.values(), *self.old.values()]
        for pid in [*(worker.pid for worker in left), *self.cron]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.evented is not None and not only_cron:
            self.evented.signal(signal.SIGKILL)
        if left:
            _logger.warning("%d worker(s) killed with their request cut short", len(left))
            self.unfinished = len(left)
        while waiting():
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self._reaped(pid, os.waitstatus_to_exitcode(status))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, os.waitstatus_to_exitcode(status))

    def _reaped(self, pid: int, code: int) -> None:
        worker = self.workers.pop(pid, None) or self.old.pop(pid, None)
        if worker is not None:
            self._gone(worker, code)
        elif pid in self.cron:
            self._cron_gone(pid, code)
        elif self.evented is not None:
            self.evented.reaped(pid, code)

    def _gone(self, worker: Worker, code: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.heartbeat)
        os.close(worker.heartbeat)
        worker.gone = True
        how = describe_exit(code)
        if worker.retiring or self._outcome is not None:
            _logger.debug("%s ended (%s)", worker.describe(), how)
        elif not worker.ready:
            self._boot_failures += 1
            if self._boot_failures >= BOOT_FAILURES_TOLERATED:
                delay = min(MAX_BACKOFF, 2.0 ** (self._boot_failures - BOOT_FAILURES_TOLERATED))
                self._spawn_after = time.monotonic() + delay
                _logger.error(
                    "%s died while starting (%s), %d in a row: next attempt in %.0f s",
                    worker.describe(),
                    how,
                    self._boot_failures,
                    delay,
                )
            else:
                _logger.warning("%s died while starting (%s)", worker.describe(), how)
        elif code == 0:
            _logger.info("%s recycled; starting another", worker.describe())
        else:
            _logger.warning("%s died (%s); starting another", worker.describe(), how)

    def _check_time_limits(self, now: float) -> None:
        limit = self.limits.time_real
        if not limit:
            return
        for worker in [*self.workers.values(), *self.old.values()]:
            if worker.quit_at:
                if now - worker.quit_at >= KILL_AFTER_QUIT:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGKILL)
            elif now - worker.last_seen > limit:
                _logger.warning(
                    "%s silent for %.0f s (--limit-time-real %g): logging its stack, then "
                    "killing it",
                    worker.describe(),
                    now - worker.last_seen,
                    limit,
                )
                worker.quit_at = now
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGQUIT)

    # --- stopping ---

    def _stop_workers(self) -> None:
        """TERM every child (each worker finishes its request), wait up to the grace period
        (a second INT/TERM ends the wait), then KILL what is left."""
        self._draining = True
        # The workers share the listen socket: shut down, it refuses new clients in all.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        busy = len(self.workers) + len(self.old)
        if busy:
            _logger.info(
                "stopping: waiting up to %gs for %d worker(s) to finish their request; "
                "press CTRL-C again or send a second signal to stop at once",
                self.shutdown_grace,
                busy,
            )
        self._stop_children(self.shutdown_grace)

    def _children(self) -> bool:
        """Whether a worker, a cron worker or the evented child is still to be reaped."""
        evented = self.evented is not None and bool(self.evented.pids)
        return bool(self.workers or self.old or self.cron or evented)

    def close(self) -> None:
        for worker in self.worker_handover:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.heartbeat)
        self._close_loop()
        with contextlib.suppress(OSError):
            self.listener.close()


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
    ) -> None:
        self.app = app
        self.listener = listener
        self.number = number
        self.heartbeat = heartbeat
        self.limits = limits
        self.master_pid = master_pid
        host, port = listener.getsockname()[:2]
        self.server_info = ServerInfo(
            host, port, multiprocess=True, keep_alive=False, max_body=max_body
        )
        self.stopping = False
        self.served = 0
        self._last_beat = 0.0
        # Well within --limit-time-real, so an idle worker is never taken for a stuck one.
        self.heartbeat_every = min(HEARTBEAT_EVERY, (limits.time_real or HEARTBEAT_EVERY) / 4)
        self.report_roots = report_roots
        self.follow_imports = follow_imports  # report the folders of new imports
        self._known = list(report_roots)  # the folders the master knows of
        self._modules = len(sys.modules)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def run(self) -> int:
        set_title(f"worker #{self.number} [{os.getpid()}]")
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
                if os.getppid() != self.master_pid:
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
        def stop(signum: int, frame: Any) -> None:
            self.stopping = True
            with contextlib.suppress(OSError):
                os.write(self._wake_write, b"\0")

        def dump(signum: int, frame: Any) -> None:
            from devserve import debug

            debug.dump_stacks()  # here and now: the main thread may be stuck in a request

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

        signal.signal(signal.SIGTERM, stop)
        # CTRL-C on a terminal signals the whole group: the master stops the workers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, dump)
        signal.signal(signal.SIGUSR1, report)
        signal.signal(signal.SIGUSR2, report)
        signal.signal(signal.SIGXCPU, out_of_cpu)
        for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)  # the master's business
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_SIGNALS)
