"""Prefork mode (``--workers N``): one master process and N worker processes that accept
on the shared listen socket, each serving one request at a time, as Odoo and gunicorn do.

The master loads the app once and forks the workers. It never serves: its control loop
(shared with the threaded server) handles signals, reaps and respawns workers, watches their
heartbeats for the real-time limit, and reloads. A reload re-execs the master in place while
its workers go on serving; the new image adopts them (their PIDs and heartbeat pipes are
passed along in the :class:`~devserve.reloader.Handover`), forks new workers with the new
code, and retires the old ones once the new ones are ready: no request fails. If the new
code does not load, the old workers stay.

Beside its workers the master supervises companions
(:class:`~devserve._engine.children.Companion`: cron workers, the evented child) that the
composition root hands it; it knows none by name. Every process it starts, signals or reaps
goes through :class:`~devserve._engine.children.Processes` (a test passes a fake), and its
clock is injectable, so ``tests/unit/test_prefork.py`` runs it with fake children.

A worker (:mod:`devserve._engine.worker`) enforces its own limits: RLIMIT_AS (hard memory),
RLIMIT_CPU re-armed per request, the request count and the soft memory limit (it exits after
the request, and the master starts another).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from devserve import limits as resource_limits
from devserve._engine.children import (
    Backoff,
    Companion,
    Processes,
    describe_exit,
    set_title,
)
from devserve._engine.devroutes import DevRoutes
from devserve._engine.scoreboard import Scoreboard
from devserve._engine.wire import RequestInfo, ServerInfo
from devserve._engine.worker import HEARTBEAT_EVERY, READY, WorkerProcess, read_heartbeats
from devserve.reloader import FileChanges, HandedWorker, Handover
from devserve.servers import ControlLoop, Outcome

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["PreforkServer", "Worker"]

_logger = logging.getLogger("devserve.prefork")

KILL_AFTER_QUIT = 3.0  # a worker past --limit-time-real: QUIT (its stack), then KILL
BOOT_FAILURES_TOLERATED = 3  # workers dying before ready in a row: then back off

FORWARDED_SIGNALS = (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


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
    # Not this master's child (a warm reload's previous master started it): never reaped
    # here, its end is its heartbeat pipe's end of file.
    foreign: bool = False
    unread: bytes = b""  # the start of a message whose end has not come yet
    born: float | None = None  # time.monotonic() of its fork (an adopted one: unknown)

    def describe(self) -> str:
        return f"worker #{self.number} (pid {self.pid})"


class PreforkServer(ControlLoop):
    """The master: forks, supervises and reloads the workers, and supervises its
    companions (:class:`~devserve._engine.children.Companion`: cron workers, the evented
    child) without knowing what they are. Every process it touches goes through
    ``processes`` (:class:`~devserve._engine.children.Processes`; a test passes a fake)."""

    mode = "prefork"
    extra_signals = (signal.SIGCHLD,)
    serves_through_reload = True  # the old workers, until the new ones are ready

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
        companions: Sequence[Companion] = (),
        on_imported: Callable[[list[str]], None] | None = None,
        adopter: int | None = None,
        processes: Processes | None = None,
        clock: Callable[[], float] = time.monotonic,
        own: DevRoutes | None = None,
        own_channel: tuple[socket.socket, socket.socket] | None = None,
    ) -> None:
        super().__init__(
            sock,
            shutdown_grace=shutdown_grace,
            reload_grace=reload_grace,
            on_changes=on_changes,
            signal_actions=signal_actions,
            own=own,
        )
        self.app = app
        self.max_body = max_body
        self.report_roots = list(report_roots)  # where a worker's cache report looks
        # Told the folders of modules a worker imported on a request (workers report them
        # only when it is set).
        self.on_imported = on_imported
        # A warm parent above this master: the workers' parent once the master is gone
        # (a warm reload), and so the previous master's workers are not our children.
        self.adopter = adopter
        self.target = workers
        self.limits = limits
        self.companions = list(companions)
        self.processes = processes or Processes()
        self.processes.in_child = self._forget_master
        self.clock = clock
        self.served_first = threading.Event()  # a first worker is ready (starts the watcher)
        self.workers: dict[int, Worker] = {}  # pid -> the workers of this image's code
        self.old: dict[int, Worker] = {}  # the previous image's, retired once ours are ready
        self.handed_workers: list[Worker] = []  # after a reload: for the next image
        self.backoff = Backoff(free=BOOT_FAILURES_TOLERATED - 1, clock=clock)
        self._pipes: set[int] = set()  # the workers' heartbeat pipes: no child keeps them
        self._master_pid = os.getpid()
        # devserve's own routes: a worker passes such a connection here (SCM_RIGHTS), and
        # this loop holds it. One socket pair for all (each message is one descriptor),
        # kept across reloads: the previous code's workers pass theirs to this master.
        self._own_channel: tuple[socket.socket, socket.socket] | None = None
        # What each worker serves, for the status (only when it is served).
        self.scoreboard = Scoreboard() if own is not None and own.status is not None else None
        if own is not None:
            pair = own_channel or socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._own_channel = pair
            pair[0].setblocking(False)
            self._selector.register(pair[0], selectors.EVENT_READ, "own")
            if adopted and not keep_adopted:
                own.hold()  # until the previous code's workers no longer take requests
        elif own_channel is not None:  # live reload turned off: nobody passes streams
            for end in own_channel:
                end.close()
        for worker in adopted:
            worker.foreign = adopter is not None
            # The new code failed to load: the old workers go on serving the old code.
            (self.workers if keep_adopted else self.old)[worker.pid] = worker
            self._watch_heartbeat(worker)
        if keep_adopted:
            self.served_first.set()

    @property
    def description(self) -> str:
        companions = (c.description for c in self.companions if c.description)
        return " + ".join([f"prefork, {self.target} workers", *companions])

    def handover(self) -> Handover:
        handover = super().handover()
        handover.workers = [HandedWorker(w.pid, w.number, w.heartbeat) for w in self.handed_workers]
        handover.own_channel = self._own_channel
        handover.image = self.own.image if self.own is not None else ""
        return handover

    # --- the loop's hooks ---

    def _start(self) -> None:
        set_title("master")

    def _turn(self) -> None:
        self._maintain()
        self._step(HEARTBEAT_EVERY)

    def _refuse_new_clients(self) -> None:
        # The workers share the listen socket: shut down, it refuses new clients in all.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)

    def _log_stopping(self) -> None:
        busy = len(self.workers) + len(self.old)
        if busy:
            _logger.info(
                "stopping: waiting up to %gs for %d worker(s) to finish their request; "
                "press CTRL-C again or send a second signal to stop at once",
                self.shutdown_grace,
                busy,
            )

    def _drain(self) -> None:
        if self._outcome is Outcome.RELOAD:
            if self._own_channel is not None:  # streams passed from now on: the next image's
                self._selector.unregister(self._own_channel[0])
            # The workers serve on through the exec; the next image adopts them. Companions
            # that end before the exec (cron workers) are waited for: the next image's must
            # not overlap them; the others are retired and finish on their own.
            self.handed_workers = [*self.workers.values(), *self.old.values()]
            for companion in self.companions:
                if not companion.ends_before_exec:
                    self._signal(companion.retire(), signal.SIGTERM)
            self._stop_children(self.reload_grace, everyone=False)
        else:
            self._draining = True
            self._stop_children(self.shutdown_grace, everyone=True)

    def _step(self, timeout: float | None) -> None:
        for key, mask in self._selector.select(timeout):
            if key.data == "wake":
                self._handle_events()
            elif key.data == "own":
                self._own_passed()
            elif not self._own_ready(key, mask):
                self._heard(key.data)

    def _own_passed(self) -> None:
        """Connections workers passed: requests this loop answers (an event stream)."""
        assert self._own_channel is not None
        while True:
            try:
                target, fds, _, _ = socket.recv_fds(self._own_channel[0], 8192, 1)
            except (BlockingIOError, InterruptedError):
                return
            if not fds:  # cut short: the client tries again
                return
            assert self.own is not None  # the channel exists for it
            self.own.take(fds[0], target.decode("latin-1"))  # this is the loop's thread

    def _heard(self, worker: Worker) -> None:
        if worker.gone:  # reaped earlier in the same batch of events
            return
        try:
            data = os.read(worker.heartbeat, 4096)
        except OSError:
            data = b""
        if not data:  # the worker is gone: reaping will tell (a foreign one: this is its end)
            self._selector.unregister(worker.heartbeat)
            if worker.foreign:
                self.workers.pop(worker.pid, None)
                self.old.pop(worker.pid, None)
                self._gone(worker, 0)
            return
        worker.last_seen = self.clock()
        beats, folders, worker.unread = read_heartbeats(worker.unread + data)
        if folders and self.on_imported is not None:
            self.on_imported(folders)
        if READY in beats and not worker.ready:
            worker.ready = True
            self.backoff.started()
            self.served_first.set()

    def handle_event(self, event: Any) -> None:
        if event in FORWARDED_SIGNALS:
            self._signal(self._children(), event)
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

    # --- keeping N workers, and the companions ---

    def _maintain(self) -> None:
        self._handle_events()  # a stop signalled meanwhile: no worker is started for nothing
        if self._outcome is not None:
            return
        self._reap()
        self._retire_extra()
        if self.backoff.allows():
            while len(self._serving()) < self.target and self._outcome is None:
                self._spawn()
        if self.old and len([w for w in self._serving() if w.ready]) >= self.target:
            self._retire_old()
        old_serving = any(not worker.retiring for worker in self.old.values())
        if self.own is not None and self.own.holding and not old_serving:
            self.own.release()  # every request goes to the new code now
        for companion in self.companions:
            companion.maintain(self.processes)
        self._check_time_limits(self.clock())

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
        self.processes.kill(worker.pid, signal.SIGTERM)

    def _signal(self, pids: Iterable[int], signum: int) -> None:
        for pid in pids:
            self.processes.kill(pid, signum)

    def _forget_master(self) -> None:
        """In a new child: the master's selector, wake-up pipe and heartbeat pipes are the
        master's business, not the child's."""
        self._selector.close()
        for descriptor in (self._wake_read, self._wake_write, *self._pipes):
            os.close(descriptor)
        if self.own is not None:
            self.own.forget()
        if self._own_channel is not None:
            self._own_channel[0].close()

    def _spawn(self) -> None:
        taken = {worker.number for worker in self.workers.values()}
        number = next(n for n in range(1, len(taken) + 2) if n not in taken)
        read_end, write_end = os.pipe()
        self._pipes.add(read_end)
        body = WorkerProcess(
            self.app,
            self.listener,
            number,
            write_end,
            self.limits,
            self._master_pid,
            self.max_body,
            self.report_roots,
            follow_imports=self.on_imported is not None,
            adopter=self.adopter,
            to_master=self._own_channel[1] if self._own_channel is not None else None,
            own_paths=self.own.paths if self.own is not None else frozenset(),
            scoreboard=self.scoreboard,
        )
        if self.scoreboard is not None:
            self.scoreboard.clear(number)
        pid = self.processes.fork(body, f"worker #{number}")
        os.close(write_end)
        os.set_blocking(read_end, False)
        worker = Worker(pid, number, read_end, last_seen=self.clock(), born=time.monotonic())
        self.workers[pid] = worker
        self._selector.register(read_end, selectors.EVENT_READ, worker)

    def _watch_heartbeat(self, worker: Worker) -> None:
        self._pipes.add(worker.heartbeat)
        self._selector.register(worker.heartbeat, selectors.EVENT_READ, worker)

    # --- what the status shows ---

    def in_flight(self) -> list[RequestInfo]:
        """The requests this master's workers serve now (the previous code's: unknown)."""
        if self.scoreboard is None:
            return []
        found = (self.scoreboard.read(w.number)[0] for w in self.workers.values() if w.born)
        return [request for request in found if request is not None]

    def children_status(self) -> list[dict[str, Any]]:
        """Every child: the workers (their number, requests served, memory, age, request)
        and the companions (cron workers, the evented child)."""
        import psutil

        now = time.monotonic()
        rows: list[dict[str, Any]] = []
        for worker in [*self.workers.values(), *self.old.values()]:
            request, served = (None, None)
            if self.scoreboard is not None and worker.born:
                request, served = self.scoreboard.read(worker.number)
            rows.append(
                {
                    "pid": worker.pid,
                    "number": worker.number,
                    "kind": "http",
                    "code": "previous" if worker.pid in self.old or not worker.born else "current",
                    "requests": served,
                    "age_s": round(now - worker.born, 1) if worker.born else None,
                    "request": request.describe() if request is not None else None,
                }
            )
        for companion in self.companions:
            rows += [{"pid": pid, "kind": companion.kind} for pid in companion.pids]
        for row in rows:
            try:
                process = psutil.Process(int(row["pid"]))
                row["rss_mib"] = round(process.memory_info().rss / 2**20, 1)
                if row.get("age_s") is None:  # a companion, or a worker of the previous code
                    row["age_s"] = round(time.time() - process.create_time(), 1)
            except psutil.Error:
                row["rss_mib"] = None
        return rows

    # --- children that end ---

    def _children(self) -> list[int]:
        """Every child still to be reaped: workers, old workers, companions."""
        workers = [*self.workers, *self.old]
        return [*workers, *(pid for companion in self.companions for pid in companion.pids)]

    def _stop_children(self, grace: float, everyone: bool) -> None:
        """TERM the companions that end before an exec (``everyone``: every child; workers
        finish their request), wait up to ``grace`` (a second INT/TERM ends the wait), then
        KILL what is left."""
        groups = [c for c in self.companions if everyone or c.ends_before_exec]
        if everyone:
            for worker in [*self.workers.values(), *self.old.values()]:
                self._terminate(worker)
        for companion in groups:
            self._signal(companion.retire(), signal.SIGTERM)

        def left() -> list[int]:
            pids = [pid for companion in groups for pid in companion.pids]
            return [*self.workers, *self.old, *pids] if everyone else pids

        deadline = self.clock() + grace
        while left() and self._outcome is not Outcome.FORCED:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            self._step(min(remaining, 0.1))
            self._reap()
        cut_short = len(self.workers) + len(self.old) if everyone else 0
        self._signal(left(), signal.SIGKILL)
        if cut_short:
            _logger.warning("%d worker(s) killed with their request cut short", cut_short)
            self.unfinished = cut_short
        while left() and (ended := self.processes.reap(block=True)) is not None:
            self._reaped(*ended)

    def _reap(self) -> None:
        while (ended := self.processes.reap()) is not None:
            self._reaped(*ended)

    def _reaped(self, pid: int, code: int) -> None:
        worker = self.workers.pop(pid, None) or self.old.pop(pid, None)
        if worker is not None:
            self._gone(worker, code)
            return
        stopping = self._outcome is not None
        for companion in self.companions:
            if companion.reaped(pid, code, stopping):
                return

    def _gone(self, worker: Worker, code: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(worker.heartbeat)
        os.close(worker.heartbeat)
        self._pipes.discard(worker.heartbeat)
        worker.gone = True
        how = describe_exit(code)
        if worker.retiring or self._outcome is not None:
            _logger.debug("%s ended (%s)", worker.describe(), how)
        elif not worker.ready:
            delay = self.backoff.failed()
            if delay:
                _logger.error(
                    "%s died while starting (%s), %d in a row: next attempt in %.0f s",
                    worker.describe(),
                    how,
                    self.backoff.failures,
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
                    self.processes.kill(worker.pid, signal.SIGKILL)
            elif now - worker.last_seen > limit:
                _logger.warning(
                    "%s silent for %.0f s (--limit-time-real %g): logging its stack, then "
                    "killing it",
                    worker.describe(),
                    now - worker.last_seen,
                    limit,
                )
                worker.quit_at = now
                self.processes.kill(worker.pid, signal.SIGQUIT)

    def close(self) -> None:
        for worker in self.handed_workers:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(worker.heartbeat)
        self._close_loop()
        for end in self._own_channel or ():  # after a reload's exec: the next image's copy
            end.close()
        with contextlib.suppress(OSError):
            self.listener.close()
