"""What every server mode shares: the :class:`Server` contract, the control loop and the
process around it.

One control loop per process runs in the main thread (:class:`ControlLoop`): signal
handlers, request threads and the file watcher never act themselves; they post an event
and wake the loop through a pipe, and the loop dispatches: stop (a second one forces),
reload (HUP, or a batch of changed files the syntax check lets through), and the signal
actions (QUIT, USR1...). Its run is written once (:meth:`ControlLoop.run`: signals in,
serve until asked, refuse, drain, let late writes settle, block the gap signals before a
reload's exec) with hooks each mode fills: the threaded server (default), the prefork
master and the gevent server, in ``devserve._engine``. Also here: binding the listen
socket, the signals captured while serving, the pidfile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from devserve._engine.devroutes import DevRoutes, Stream
from devserve._engine.wire import RequestInfo
from devserve.errors import BindError
from devserve.reloader import GAP_SIGNALS, FileChanges, Handover, Reload, describe_paths

__all__ = [
    "ControlLoop",
    "ErrorReport",
    "Outcome",
    "Pidfile",
    "Server",
    "bind_socket",
    "capture_signals",
]

_logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024  # connections that arrive while devserve restarts wait here
IDLE_CONNECTION_TIMEOUT = 30.0  # an accepted connection that sends nothing is closed then
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LATE_QUIET = 0.05  # before the exec: seconds without a change reported, if any came late
SETTLE_MAX = 2.0  # ...but no longer than this after the reload was decided


@dataclasses.dataclass(frozen=True)
class OwnRequest:
    """A connection whose request devserve answers itself (``/__devserve__/``), handed to
    the control loop by whoever read it: its descriptor, and the request's target."""

    fd: int
    target: str


class Outcome(enum.Enum):
    """How a server's run ended."""

    STOP = "stop"  # INT/TERM: exit
    RELOAD = "reload"  # HUP or a code change: re-exec in place
    FORCED = "forced"  # a second INT/TERM while draining: exit now


class Event(Protocol):
    """A threading (or gevent) event."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self, timeout: float) -> bool: ...


class Server(Protocol):
    """What the runtime needs of a server, whatever its mode."""

    listener: socket.socket
    unfinished: int  # requests cut short when run() returned
    reload: Reload | None  # after a run that ended in a reload: why, and when
    # Seconds since the watcher saw a file change: a reload waits for a checkout to end.
    changes_quiet_for: Callable[[], float]

    @property
    def served_first(self) -> Event:
        """Set once a first request was answered (prefork: once a first worker is ready)."""
        ...

    @property
    def url(self) -> str: ...

    @property
    def description(self) -> str: ...

    def run(self, on_ready: Callable[[], None] | None = None) -> Outcome: ...

    def notify(self, event: Any) -> bool: ...

    def in_flight(self) -> list[RequestInfo]: ...

    def children_status(self) -> list[dict[str, Any]]: ...

    def handover(self) -> Handover: ...

    def close(self) -> None: ...


def bind_socket(interface: str, port: int) -> socket.socket:
    """A listening TCP socket, or a BindError that says what to do."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    where = f"[{interface}]:{port}" if family == socket.AF_INET6 else f"{interface}:{port}"
    try:
        return socket.create_server((interface, port), family=family, backlog=LISTEN_BACKLOG)
    except socket.gaierror:
        raise BindError(
            f"cannot listen on {interface!r}: it is not an address or known host name of this "
            "machine; check --http-interface"
        ) from None
    except PermissionError:
        raise BindError(
            f"permission denied to listen on {where}: ports below 1024 need privileges; "
            "choose another port with -p/--http-port"
        ) from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise BindError(
                f"port {port} is already in use on {interface}: stop the program using it, "
                "or choose another port with -p/--http-port"
            ) from None
        if error.errno == errno.EADDRNOTAVAIL:
            raise BindError(
                f"cannot listen on {interface}: not an address of this machine; "
                "check --http-interface"
            ) from None
        raise BindError(f"cannot listen on {where}: {error.strerror}") from None


@contextlib.contextmanager
def capture_signals(
    signals: Iterable[signal.Signals],
    notify: Callable[[Any], object],
    reloading: Callable[[], bool] = lambda: False,
) -> Iterator[None]:
    """While inside, the signals only post themselves as events; old handlers come back after.
    Once the handlers are in place the signals are unblocked: a phoenix reload blocks them
    across the exec, so one sent in that gap is delivered here, late but harmless.

    Leaving for a reload, the old (default) handlers must not come back: the main thread
    blocks the signals, but other threads (the watcher's, pooled ones) may not, and a HUP
    delivered to one of them would kill the process. They pend instead (see below)."""
    previous = {}
    for signum in signals:
        previous[signum] = signal.signal(signum, lambda number, _frame: notify(number))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, previous)
    try:
        yield
    finally:
        pend = reloading()
        for signum, handler in previous.items():
            signal.signal(
                signum, _pend_for_next_image if pend and signum in GAP_SIGNALS else handler
            )


def _pend_for_next_image(signum: int, frame: object) -> None:
    """A signal between the reload decision and the exec: left pending on the main thread,
    which blocks it, so the next image receives it once its handlers are in place."""
    main = threading.main_thread().ident
    if main is not None:
        signal.pthread_kill(main, signum)


def signal_actions(roots: Callable[[], list[str]]) -> dict[int, Callable[[], None]]:
    """QUIT dumps every thread's stack; USR1 reports cache statistics (of the functools
    caches under ``roots()``), USR2 with sizes. (The reports are imported on first use:
    start-up is reload latency.)"""
    reporter: list[Any] = []

    def report(sizes: bool) -> None:
        from devserve import debug

        if not reporter:
            reporter.append(debug.CacheReporter(roots()))
        reporter[0].request(sizes)

    def dump() -> None:
        from devserve import debug

        debug.dump_stacks()

    return {
        signal.SIGQUIT: dump,
        signal.SIGUSR1: lambda: report(False),
        signal.SIGUSR2: lambda: report(True),
    }


class Pidfile:
    """Writes the PID at start; only the process that wrote the file removes it."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.owner: int | None = None

    def write(self) -> None:
        if self.path:
            with open(self.path, "w", encoding="ascii") as file:
                file.write(f"{os.getpid()}\n")
            self.owner = os.getpid()

    def remove(self) -> None:
        if self.path and self.owner == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.owner = None


class ControlLoop:
    """What every mode's control loop shares. Signal handlers, threads and the watcher post
    events and wake the loop through a pipe; the loop handles them: stop (a second one
    forces), reload (HUP, or a batch of changed files the syntax check lets through), and
    the ``signal_actions`` (QUIT, USR1...). Each mode adds its own events."""

    mode = "?"
    extra_signals: tuple[signal.Signals, ...] = ()  # a mode's own, beside GAP_SIGNALS
    # Requests go on being served by the old code through a reload (prefork's workers):
    # a page that asked for itself at once would get the old code again.
    serves_through_reload = False

    def __init__(
        self,
        sock: socket.socket,
        *,
        shutdown_grace: float = 5.0,
        reload_grace: float = 5.0,
        on_changes: Callable[[FileChanges], frozenset[str]] | None = None,
        signal_actions: Mapping[int, Callable[[], None]] | None = None,
        own: DevRoutes | None = None,
    ) -> None:
        self.listener = sock
        self.listener.setblocking(False)
        self.shutdown_grace = shutdown_grace
        self.reload_grace = reload_grace
        # The files of a batch of changes that reload (none: no reload).
        self.on_changes = on_changes
        self.signal_actions = dict(signal_actions or {})  # QUIT, USR1...: run by the loop
        self.reload: Reload | None = None  # what asked for the reload under way, and when
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = threading.RLock()  # close() against notify() from other threads
        self._closed = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        # devserve's own routes (live reload's event streams), held here: no thread each.
        self.own = own
        if own is not None:
            own.attach(self._selector)
        self._draining = False
        self._outcome: Outcome | None = None
        self._errors = ErrorReport()  # what the loop went on from
        self._last_change = 0.0  # time.monotonic() of a change reported during a reload
        self._late_paths: set[str] = set()  # the files a reload for changes is for
        # Seconds since the watcher saw a file change (set by who watches; never: infinite).
        self.changes_quiet_for: Callable[[], float] = lambda: float("inf")
        self.unfinished = 0  # requests cut short when run() returned
        # After a reload: for the next image, connections with what was read of their request.
        self.handed_connections: list[tuple[socket.socket, bytes]] = []

    @property
    def description(self) -> str:
        """The mode, as the banner shows it."""
        return self.mode

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    # --- the run, written once; the hooks below are the modes' ---

    def run(self, on_ready: Callable[[], None] | None = None) -> Outcome:
        """Serve until a stop or reload is asked for; then drain. Returns what ended it.
        ``on_ready`` runs once the signal handlers are in place (so a signal sent by whoever
        saw the readiness announcement is handled, never fatal)."""
        with self._signals_handled():
            self._start()
            if on_ready is not None:
                on_ready()
            while self._outcome is None:
                try:
                    self._turn()
                except Exception as error:  # nothing ends the loop: it sheds load instead
                    self._errors.add(error)
            self._stop_accepting()
            if self.own is not None:  # the pages ask the next image for themselves
                reloading = self._outcome is Outcome.RELOAD and not self.serves_through_reload
                self.own.close_all(reloading=reloading)
            if self._outcome is Outcome.STOP:
                self._refuse_new_clients()
                self._log_stopping()
            self._drain()
            self._let_writes_settle()
            if self._outcome is Outcome.RELOAD:
                # Held from here to the new image's handlers: none may take a default action.
                signal.pthread_sigmask(signal.SIG_BLOCK, GAP_SIGNALS)
        return self._outcome

    def _signals_handled(self) -> contextlib.AbstractContextManager[None]:
        """While serving, the signals post themselves as events."""
        return capture_signals((*GAP_SIGNALS, *self.extra_signals), self.notify, self._reloading)

    def _start(self) -> None:
        """The signal handlers are in: start serving."""

    def _turn(self) -> None:
        """One turn of the loop: wait for events (a mode's too) and handle them."""
        self._step(None)

    def _stop_accepting(self) -> None:
        """A stop or a reload was asked for: accept no more connections."""

    def _refuse_new_clients(self) -> None:
        """Stopping: clients that connect from now on are refused."""
        self.listener.close()

    def _drain(self) -> None:
        """Let what runs finish within the grace period; what is handed over is set aside."""

    def handover(self) -> Handover:
        """After a run that ended in a reload: what this server hands to the next image."""
        return Handover(
            listener=self.listener, reload=self.reload, connections=self.handed_connections
        )

    def to_loop(self, fd: int, target: str) -> None:
        """A connection whose request the loop answers (see :mod:`devserve._engine.
        devroutes`), from the thread (or greenlet) that read it."""
        if not self.notify(OwnRequest(fd, target)):
            os.close(fd)  # the server is gone

    def notify(self, event: Any) -> bool:
        """Post an event and wake the control loop; False once the server is closed. Safe
        from signal handlers (the lock is reentrant) and threads."""
        with self._closing:
            if self._closed:
                return False
            self.events.put(event)
            with contextlib.suppress(BlockingIOError):  # a full pipe is a pending wake-up
                os.write(self._wake_write, b"\0")
        return True

    def _handle_events(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            try:
                self.handle_event(event)
            except Exception as error:  # the events after it are handled all the same
                self._errors.add(error)

    def handle_event(self, event: Any) -> None:
        if event in self.signal_actions:  # a stack dump, a report: also while draining
            self.signal_actions[event]()
        elif event in STOP_SIGNALS:
            if self._outcome is Outcome.STOP and self._draining:
                self._outcome = Outcome.FORCED  # the second one
            elif self._outcome is not Outcome.FORCED:
                self._outcome = Outcome.STOP  # a stop wins over a reload under way
        elif event == signal.SIGHUP or isinstance(event, FileChanges):
            self._reload_asked(event)
        elif isinstance(event, OwnRequest):
            if self.own is None:
                os.close(event.fd)
            else:
                self.own.take(event.fd, event.target)
        else:
            self.handle_mode_event(event)

    def handle_mode_event(self, event: Any) -> None:
        """A mode's own events."""

    def _reload_asked(self, event: Any) -> None:
        if self._outcome is Outcome.RELOAD and isinstance(event, FileChanges):
            # The next image loads them too: their bytecode prepared, and the reload's
            # line names them (a checkout the watcher saw in two batches is one reload).
            self._late_paths |= self._wants_reload(event)
            self._last_change = time.monotonic()
        elif self._outcome is not None:
            return
        elif event == signal.SIGHUP:
            self._reload("SIGHUP", time.monotonic())
        elif isinstance(event, FileChanges) and (reloading := self._wants_reload(event)):
            self._late_paths = set(reloading)
            self._reload(describe_paths(reloading), event.first_seen, reloading)

    def _reloading(self) -> bool:
        return self._outcome is Outcome.RELOAD

    def _let_writes_settle(self) -> None:
        """Before the exec: while files still change (a checkout that a busy machine writes
        slowly, its writes further apart than a batch's quiet time), wait until they stop
        (at most SETTLE_MAX after the reload was decided), so the next image loads the whole
        tree, not half of it, and one checkout stays one reload."""
        if self.reload is None:
            return
        cap = self.reload.decided + SETTLE_MAX
        while self._outcome is Outcome.RELOAD:
            now = time.monotonic()
            quiet = min(self.changes_quiet_for(), now - self._last_change)
            if quiet >= now - self.reload.decided:
                break  # nothing changed since the decision: no wait (reload latency)
            wait = LATE_QUIET - quiet
            if wait <= 0 or now >= cap:
                break
            try:
                self._step(min(wait, cap - now))
            except Exception as error:  # the exec comes all the same
                self._errors.add(error)
                break
        if self._last_change and self.reload is not None:
            self.reload = dataclasses.replace(
                self.reload,
                cause=describe_paths(self._late_paths),
                paths=frozenset(self._late_paths),
            )

    def _step(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` for events and handle them (a mode adds its own)."""
        for key, mask in self._selector.select(timeout):
            if key.data == "wake":
                self._handle_events()
            else:
                self._own_ready(key, mask)

    def own_routes(self) -> dict[str, Any]:
        """What a connection needs to hand the loop a request it answers itself: the
        ``own_paths`` and ``to_loop`` of its :class:`~devserve._engine.wire.ServerInfo`."""
        if self.own is None:
            return {}
        return {"own_paths": self.own.paths, "to_loop": self.to_loop}

    def _own_ready(self, key: selectors.SelectorKey, mask: int) -> bool:
        """A key of devserve's own routes (an event stream) handled; False: not one."""
        if not isinstance(key.data, Stream) or self.own is None:
            return False
        self.own.ready(key.data, mask)
        return True

    def _wants_reload(self, changes: FileChanges) -> frozenset[str]:
        return self.on_changes(changes) if self.on_changes is not None else frozenset()

    def _reload(self, cause: str, first_seen: float, paths: frozenset[str] = frozenset()) -> None:
        self._outcome = Outcome.RELOAD
        self.reload = Reload(cause, first_seen, decided=time.monotonic(), paths=paths)

    def busy_requests(self) -> list[Any]:
        """What the app is serving right now (a mode's own)."""
        return []

    def in_flight(self) -> list[RequestInfo]:
        """The requests being served now, for the status (a mode's own)."""
        return []

    def children_status(self) -> list[dict[str, Any]]:
        """The processes this one keeps (prefork's workers), for the status."""
        return []

    def _log_stopping(self) -> None:
        busy = self.busy_requests()
        if busy:
            _logger.info(
                "stopping: waiting up to %gs for %d running request(s); "
                "press CTRL-C again or send a second signal to stop at once",
                self.shutdown_grace,
                len(busy),
            )
        else:
            _logger.info("stopping")

    def _close_loop(self) -> None:
        """No more events; the wake-up pipe and the selector go."""
        with self._closing:
            self._closed = True
        if self.own is not None:
            self.own.close_all()
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


class ErrorReport:
    """Errors the control loop met and went on from: logged with their traceback, at most
    once a second (a flood must not become a flood of log lines)."""

    def __init__(self) -> None:
        self.reported_at = 0.0
        self._unreported = 0

    def add(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self.reported_at < 1.0:
            self._unreported += 1
            return
        more = f" ({self._unreported} more since the last report)" if self._unreported else ""
        _logger.error("the control loop met an error and goes on%s", more, exc_info=error)
        self.reported_at, self._unreported = now, 0
