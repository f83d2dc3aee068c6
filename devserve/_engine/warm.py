"""Warm reload: a parent that keeps the framework imported and forks one serving child per
code generation (``--reload-mode warm``, the default with ``--dev reload``): the threaded
or gevent server, or a prefork master (whose workers, when it hands back, become the
parent's children and serve on until the next master retires them).

The parent is the process the user started (its PID, the pidfile, the signals). It holds
the listen socket and never runs the app's code. Each serving child, forked from it, loads
the project, serves (the threaded server, its watcher, cron) and reports the modules it
imported from outside the project, which the parent imports in turn
(:mod:`devserve._engine.preload`). A reload in the child ends as a phoenix reload would,
but instead of an exec the child hands its :class:`~devserve.reloader.Handover` (the
connections not served yet, with their bytes) back to the parent over a socket pair, and
exits; the parent forks the next child with it, which pays only for the project.

The parent execs instead (a fresh image of itself, as ``--reload-mode exec`` does for every
reload) on HUP, when a changed file is one of a module it holds or devserve's config file,
and when preloading went wrong (:attr:`Preloaded.broken`).

Signals to the parent: INT/TERM stop the child (forwarded as TERM: CTRL-C on a terminal
reaches both, and the child ignores INT) and then the parent; QUIT logs the parent's
stacks and is forwarded; USR1/USR2 are forwarded; a child that dies is replaced.
The child stops when the parent is gone (its end of the socket pair reads end-of-file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import select
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from devserve._engine.children import CHILD_SIGNALS, Backoff, describe_exit, set_title
from devserve._engine.preload import Preloaded, ProjectGuard, imported_since, preload
from devserve.errors import DevserveError, report
from devserve.reloader import Handover
from devserve.servers import STOP_SIGNALS, ControlLoop, Outcome

__all__ = ["Channel", "WarmParent"]

_logger = logging.getLogger("devserve.warm")

PACKET = 65536  # bytes of a message per packet
FDS_PER_PACKET = 250  # the kernel's limit is 253 descriptors per message
FORWARDED = (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU)
PR_SET_CHILD_SUBREAPER = 36  # prctl(2): orphaned descendants are re-parented to us
KILL_AFTER = 1.0  # seconds past the grace before a child that does not stop is killed
PRELOAD_SLICE = 0.02  # seconds of preloading between two looks at the events
REST_OF_MESSAGE = 5.0  # seconds the rest of a message may take once its first packet came
DEAD_AFTER_READY = 0  # children dying before ready, in a row, that restart at once
REPORT_DELAY = 0.25  # a child reports what to preload after a first request, or this long


class Channel:
    """One end of the parent-child socket pair: JSON messages with descriptors attached,
    cut into packets (a message may carry thousands of connections)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._sending = threading.Lock()  # a message's packets are never interleaved
        self.parent_pid = os.getpid()  # in a child: its warm parent's (recorded before the fork)

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(parent), cls(child)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps(message).encode()
        packets = max(1, -(-len(data) // PACKET), -(-len(fds) // FDS_PER_PACKET))
        with self._sending:
            for index in range(packets):
                flag = b"." if index == packets - 1 else b"+"
                chunk = data[index * PACKET : (index + 1) * PACKET]
                descriptors = fds[index * FDS_PER_PACKET : (index + 1) * FDS_PER_PACKET]
                socket.send_fds(self.sock, [flag + chunk], list(descriptors))

    def receive(self) -> tuple[dict[str, Any], list[int]] | None:
        """The next message and its descriptors; None when the other end is gone. A message
        cut short (its sender died half-way: the rest never comes within a few seconds) or
        malformed is dropped: ``({}, [])``, its descriptors closed."""
        data, fds = b"", []
        received: list[int]
        while True:
            if data and not select.select([self.sock], [], [], REST_OF_MESSAGE)[0]:
                packet, received = b"", []  # the sender died half-way through
            else:
                try:
                    packet, received, flags, _address = socket.recv_fds(
                        self.sock, PACKET + 1, FDS_PER_PACKET
                    )
                except OSError:
                    packet, received, flags = b"", [], 0
                if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                    packet = b""
            fds.extend(received)
            if not packet or packet[:1] not in (b".", b"+"):
                _close_all(fds)
                return ({}, []) if data else None
            data += packet[1:]
            if packet[:1] == b".":
                try:
                    message = json.loads(data)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    _close_all(fds)
                    return {}, []
                return message, fds

    def close(self) -> None:
        self.sock.close()


class WarmParent(ControlLoop):
    """The warm parent's control loop: fork a serving child, take its hand-back and fork
    the next, replace one that dies, forward signals; its run ends in a stop, or in a
    reload that needs an exec (:meth:`handover` is what the exec passes on)."""

    mode = "warm parent"
    extra_signals = (signal.SIGCHLD,)

    def __init__(
        self,
        sock: socket.socket,
        first: Handover,
        serve: Callable[[Handover, Channel], int],
        *,
        preloaded: Preloaded,
        exec_files: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
        **loop: Any,
    ) -> None:
        super().__init__(sock, **loop)
        self.serve = serve  # what a forked child runs, with its hand-over and channel
        self.preloaded = preloaded
        self.exec_files = exec_files  # a change to one of these needs a fresh image
        self.clock = clock
        self.child = 0  # the PID of the serving child (0: none)
        self.channel: Channel | None = None
        self.ready = False  # the serving child reported its app loaded
        self.first_code: int | None = None  # the first child failed: devserve exits so
        self.backoff = Backoff(DEAD_AFTER_READY, clock)
        self._next: Handover | None = first  # what the next child starts with
        self._handed: Handover | None = None  # for the exec
        self._exec_asked = False  # HUP: the child's hand-back goes to an exec
        self._generations = 0
        self._to_preload: list[str] = []  # reported by a child, not imported yet
        self._preload_where: tuple[list[str], list[str]] = ([], [])  # roots, import path
        self._preload_started = (0, 0.0)  # imported and seconds when this batch began

    def handover(self) -> Handover:
        return self._handed if self._handed is not None else Handover(listener=self.listener)

    # --- the run's hooks ---

    def _start(self) -> None:
        set_title("warm parent")
        become_subreaper()
        self._fork()

    def _turn(self) -> None:
        timeout = None
        if self.child == 0 and self._outcome is None:
            wait = self.backoff.until - self.clock()
            if wait <= 0:
                self._fork()
            else:
                timeout = wait
        if self._to_preload and self._outcome is None:
            self._step(0)  # what the child sent first: a hand-back never waits for a preload
            self._preload_some()
        else:
            self._step(timeout)

    def _step(self, timeout: float | None) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data == "wake":
                self._handle_events()
            elif key.data == "child" and key.fileobj is self.channel:
                self._from_child()

    def _log_stopping(self) -> None:
        if self.first_code is None:  # else the child said why already
            super()._log_stopping()

    def _refuse_new_clients(self) -> None:
        pass  # the child accepts until it stops; the parent closes its copy at the end

    def _drain(self) -> None:
        """Wait for the serving child to end (it was sent TERM), then KILL it."""
        self._draining = True
        grace = self.reload_grace if self._outcome is Outcome.RELOAD else self.shutdown_grace
        deadline = self.clock() + grace + KILL_AFTER
        while self.child and self.clock() < deadline:
            self._step(min(0.1, max(0.0, deadline - self.clock())))
            if self._outcome is Outcome.FORCED:
                deadline = min(deadline, self.clock() + KILL_AFTER)
        if self.child:
            _logger.warning("the serving process (pid %d) did not stop: killed", self.child)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.child, 0)
            self._child_gone()

    def close(self) -> None:
        if self.channel is not None:
            self._selector.unregister(self.channel)
            self.channel.close()
            self.channel = None
        self._close_loop()
        self.listener.close()

    # --- events ---

    def handle_event(self, event: Any) -> None:
        if event in STOP_SIGNALS:
            super().handle_event(event)
            self._signal_child(signal.SIGTERM)
        elif event == signal.SIGHUP:
            self._exec_asked = True
            if not self._signal_child(signal.SIGHUP):
                self._exec(Handover(listener=self.listener), "SIGHUP")
        elif event in FORWARDED:
            if event in self.signal_actions:  # QUIT: the parent's own stacks too
                self.signal_actions[event]()
            self._signal_child(event)
        elif event == signal.SIGCHLD:
            self._reap()

    def _signal_child(self, signum: int) -> bool:
        if not self.child:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child, signum)
        return True

    def _from_child(self) -> bool:
        """Handle the child's next message; False at the channel's end of file."""
        if self.channel is None:
            return False
        received = self.channel.receive()
        if received is None:  # the child is gone: reaping tells how
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.channel)
            return False
        message, fds = received
        try:
            if message.get("kind") == "serving":
                self.ready = True
                self.backoff.started()
            elif message.get("kind") == "ready" and self._outcome is None:
                self._preload(message)
            elif message.get("kind") == "handback":
                fds, received_fds = [], fds
                self._hand_back(message, received_fds)
        finally:
            _close_all(fds)
        return True

    def _read_pending(self) -> None:
        """What the child sent before it ended (a hand-back, most of all) is read before
        the channel goes: a few messages at most (serving, ready, a hand-back)."""
        for _ in range(8):
            channel = self.channel
            if channel is None or not select.select([channel.sock], [], [], 0)[0]:
                return
            if not self._from_child():
                return

    def _preload(self, message: Mapping[str, Any]) -> None:
        """Queue what a child imported for preloading, a slice at a time between events
        (:meth:`_preload_some`): a reload asked for meanwhile forks at once, and its child
        imports what the parent has not yet."""
        try:
            modules, roots, path = message["modules"], message["roots"], message["path"]
            new = [str(name) for name in modules if name not in self.preloaded.asked]
        except (KeyError, TypeError):
            _logger.error("the serving process's list of modules is malformed")
            return
        if new and not self._to_preload:
            self._preload_started = (self.preloaded.imported, self.preloaded.seconds)
        self._to_preload = list(dict.fromkeys([*self._to_preload, *new]))
        self._preload_where = ([str(r) for r in roots], [str(p) for p in path])

    def _preload_some(self) -> None:
        roots, path = self._preload_where
        try:
            until = self.clock() + PRELOAD_SLICE
            self._to_preload = preload(self._to_preload, roots, path, self.preloaded, until)
        except Exception:  # the children load what is missing themselves
            _logger.exception("preloading failed")
            self._to_preload = []
        if self._to_preload:
            return
        imported, seconds = self._preload_started
        _logger.info(
            "warm parent: %d modules imported ahead in %.0f ms (%d skipped in all)",
            self.preloaded.imported - imported,
            (self.preloaded.seconds - seconds) * 1000,
            self.preloaded.failed,
        )
        # What the parent holds now is never collected: a child's collections then skip it,
        # instead of touching (and so copying) every page of it (load 6-8 ms, not 8-11).
        gc.freeze()

    def _hand_back(self, message: Mapping[str, Any], fds: list[int]) -> None:
        """The serving child drained and handed its connections back: fork the next one,
        or exec (stopping meanwhile: neither, the connections are closed)."""
        try:
            handed = Handover.from_record(message["record"], fds, self.listener)
        except (ValueError, TypeError, KeyError, IndexError, OSError) as error:
            _logger.error("the serving process's hand-over is malformed (%s)", error)
            _close_all(fds[1:])  # none was adopted (the parent has one thread: no reuse)
            handed = Handover(listener=self.listener)
        self._child_gone()  # it leaves on its own: the next one starts now, not at its exit
        if self._outcome is not None:
            _close_handover(handed)
            return
        self._preload(message)
        reason = self._exec_reason(handed)
        if reason:
            self._exec(handed, reason)
        else:
            self._next = handed

    def _exec_reason(self, handed: Handover) -> str:
        """Why this reload needs a fresh image ("" when a fork will do)."""
        paths = handed.reload.paths if handed.reload is not None else frozenset()
        if self._exec_asked:
            return "SIGHUP"
        if self.preloaded.broken:
            return self.preloaded.broken
        if held := sorted(paths & (self.preloaded.files | self.exec_files)):
            return f"{held[0]} is loaded by the warm parent"
        return ""

    def _exec(self, handed: Handover, reason: str) -> None:
        if self._outcome is not None:  # a stop asked for meanwhile wins
            _close_handover(handed)
            return
        _logger.info("reloading with a fresh process image: %s", reason)
        self._handed = handed
        self._outcome = Outcome.RELOAD

    # --- the serving child ---

    def _fork(self) -> None:
        handed = self._next or Handover(listener=self.listener)
        handed.listener = self.listener
        # Blocked until the child's own handlers are in (the parent's would swallow them).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        try:
            parent_end, child_end = Channel.pair()
            try:
                pid = os.fork()
            except OSError:
                parent_end.close()
                child_end.close()
                raise
        except OSError as error:  # kept for the next try, after a back-off
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self._next = handed
            delay = self.backoff.failed()
            _logger.error("cannot start a serving process (%s): trying again in %g s", error, delay)
            return
        self._next = None
        if pid == 0:
            parent_end.close()
            self._run_child(handed, child_end)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()
        for sock, _received in handed.connections:  # the child has them now
            sock.close()
        for worker in handed.workers:
            os.close(worker.heartbeat)
        for end in handed.own_channel or ():
            end.close()
        self.child, self.channel, self.ready = pid, parent_end, False
        self._selector.register(parent_end, selectors.EVENT_READ, "child")
        self._generations += 1

    def _run_child(self, handed: Handover, channel: Channel) -> None:
        """In the forked child: its own signals, a watch on the parent, then serve."""
        code = 1
        try:
            self._close_loop()  # the parent's loop is not this process's
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # CTRL-C: the parent stops us
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, _interrupt)  # while loading; the server's next
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGCHLD})
            set_title(f"serving [{os.getpid()}]")
            watch_parent(channel)
            code = self.serve(handed, channel)
        except KeyboardInterrupt:
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except DevserveError as error:  # the app cannot be served: one line, as the CLI says
            code = report(error)
        except BaseException:
            _logger.exception("the serving process failed")
        finally:
            exit_now(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self._read_pending()  # a hand-back it sent before it ended comes first
            if pid == self.child:
                self._child_ended(os.waitstatus_to_exitcode(status))

    def _child_ended(self, code: int) -> None:
        """The serving child ended without handing back (one that did is not waited for)."""
        pid, ready = self.child, self.ready
        self._child_gone()
        _stop_orphans()
        if self._outcome is not None:
            return  # we are stopping
        if not ready and self._generations == 1:  # it said why (an exit code of ours)
            if code <= 0:
                _logger.error("the serving process ended while loading (%s)", describe_exit(code))
            self.first_code = code if code > 0 else 1
            self._outcome = Outcome.STOP
            return
        delay = 0.0 if ready else self.backoff.failed()
        _logger.error(
            "the serving process (pid %d) ended (%s): starting another%s",
            pid,
            describe_exit(code),
            f" in {delay:g} s" if delay else "",
        )

    def _child_gone(self) -> None:
        if self.channel is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.channel)
            self.channel.close()
        self.child, self.channel, self.ready = 0, None, False


def _stop_orphans() -> None:
    """The serving child ended without handing back: any other child of ours is a prefork
    worker it left (adopted by us as a subreaper), which nobody would ever retire. TERM:
    it finishes its request first."""
    import psutil

    with contextlib.suppress(psutil.Error):
        for orphan in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                orphan.terminate()


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _close_handover(handed: Handover) -> None:
    """What a hand-over holds that nobody will take (the listen socket is not its own)."""
    for sock, _received in handed.connections:
        sock.close()
    _close_all([worker.heartbeat for worker in handed.workers])
    for end in handed.own_channel or ():
        end.close()


def become_subreaper() -> None:
    """Prefork under a warm parent: when a serving master hands back and exits, its workers
    (serving on until the next master retires them) become the parent's children, not
    init's: their orphan check passes, and the parent reaps them (Linux; elsewhere they
    see their master gone and stop after their request)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch_parent(channel: Channel) -> None:
    """In a serving child: TERM itself once the parent is gone (the channel's end-of-file),
    so no child outlives devserve."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while channel.sock.recv(1):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="devserve.warm.parent", daemon=True).start()


def exit_now(code: int) -> NoReturn:
    """Leave the child at once (nothing of the parent's may run at exit), the log flushed."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def report_ready(
    channel: Channel, inherited: set[str], roots: Callable[[], list[str]], after: Any
) -> None:
    """From a serving child that loaded the app: that it serves; then, once it answered a
    first request (or 250 ms passed; ``after``: that event), the modules it imported from
    outside the project since the fork (``inherited``: those it had then), for the parent
    to preload. Not at once: the parent's preload must not compete with a first request
    for the CPU."""

    try:
        channel.send({"kind": "serving"})
    except OSError:
        return

    def report() -> None:
        after.wait(REPORT_DELAY)
        try:
            channel.send({"kind": "ready", **_imported(inherited, roots())})
        except OSError:  # the parent is gone: the child stops on its own
            _logger.debug("the warm parent is gone")
        except Exception:  # the parent preloads nothing more: reloads are slower, not wrong
            _logger.exception("telling the warm parent what to preload failed")

    threading.Thread(target=report, name="devserve.warm.ready", daemon=True).start()


def hand_back(
    channel: Channel, handed: Handover, inherited: set[str], roots: list[str]
) -> NoReturn:
    """From a serving child that drained for a reload: its hand-over goes to the parent,
    which forks the next child (or execs); the child leaves at once, its connections
    untouched (closing them here could end them for the next child too)."""
    if handed.reload is not None:
        handed.reload = dataclasses.replace(handed.reload, exec_at=time.monotonic(), kind="warm")
    try:
        imported = _imported(inherited, roots)
    except Exception:  # the hand-over matters more than what to preload
        _logger.exception("listing what the warm parent may preload failed")
        imported = {"modules": [], "roots": roots, "path": []}
    fds, record = handed.to_record()
    with contextlib.suppress(OSError):  # the parent is gone: nothing to hand back to
        channel.send({"kind": "handback", "record": record, **imported}, fds)
    exit_now(0)


def _imported(inherited: set[str], roots: list[str]) -> dict[str, list[str]]:
    """What a child tells its parent to preload: the modules it imported from outside the
    project, the project's folders (never preloaded) and the import path."""
    modules = imported_since(inherited, ProjectGuard(roots))
    path = [entry for entry in sys.path if isinstance(entry, str)]
    return {"modules": modules, "roots": list(roots), "path": path}
