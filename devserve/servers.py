"""Server modes: the threaded server (default); prefork and gevent come next to it.

One control loop per process runs in the main thread: it accepts connections and handles
events. Signal handlers, request threads and (later) the file watcher never act themselves:
they post an event and wake the loop through a pipe, and the loop dispatches. Werkzeug's
request handler serves each connection in its own non-daemon thread, which records what it
is serving so stack dumps and limits can name it.
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
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from devserve.errors import BindError
from devserve.reloader import GAP_SIGNALS, FileChanges, Reload, describe_paths

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "Outcome",
    "Pidfile",
    "RequestInfo",
    "RequestThread",
    "ThreadedServer",
    "bind_socket",
    "capture_signals",
]

_logger = logging.getLogger(__name__)
_access_logger = logging.getLogger("devserve.access")

LISTEN_BACKLOG = 1024  # connections that arrive while devserve restarts wait here
ACCEPT_BATCH = 32  # connections accepted per wake-up of the control loop
IDLE_THREAD_TIMEOUT = 30.0  # a pooled request thread with no work for this long retires
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Outcome(enum.Enum):
    """How a server's run ended."""

    STOP = "stop"  # INT/TERM: exit
    RELOAD = "reload"  # HUP or a code change: re-exec in place
    FORCED = "forced"  # a second INT/TERM while draining: exit now


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
    signals: Iterable[signal.Signals], notify: Callable[[Any], None]
) -> Iterator[None]:
    """While inside, the signals only post themselves as events; old handlers come back after.
    Once the handlers are in place the signals are unblocked: a phoenix reload blocks them
    across the exec, so one sent in that gap is delivered here, late but harmless."""
    previous = {}
    for signum in signals:
        previous[signum] = signal.signal(signum, lambda number, _frame: notify(number))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, previous)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What a request thread is serving, for stack dumps and limits."""

    method: str
    path: str
    client: str
    started: float  # time.monotonic()

    @property
    def age(self) -> float:
        return time.monotonic() - self.started


class RequestThread(threading.Thread):
    """A pooled thread serving one connection at a time. Non-daemon: a stop lets it finish
    its request. Between connections it waits for the next one, and retires when none has
    come for a while."""

    kind = "request"

    def __init__(self, work: Callable[[RequestThread], None], number: int) -> None:
        super().__init__(target=work, args=(self,), name=f"devserve.request.{number}")
        self.jobs: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        self.connection: socket.socket | None = None  # None while idle in the pool
        self.started_at = 0.0  # when the current connection was accepted
        self.request: RequestInfo | None = None
        self.waiting = True  # no request line parsed yet: possibly an idle connection


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, recording the request on its thread and logging it our way."""

    def parse_request(self) -> bool:
        thread = threading.current_thread()
        if isinstance(thread, RequestThread):
            thread.waiting = False  # a request has begun: a stop lets it finish
        return super().parse_request()

    def run_wsgi(self) -> None:
        thread = threading.current_thread()
        if not isinstance(thread, RequestThread):
            super().run_wsgi()
            return
        client = self.client_address[0] if self.client_address else "-"
        thread.request = RequestInfo(self.command, self.path, client, time.monotonic())
        try:
            super().run_wsgi()
        finally:
            thread.request = None

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        thread = threading.current_thread()
        info = thread.request if isinstance(thread, RequestThread) else None
        took = f"{info.age * 1000:.1f}ms" if info else "-"
        status = int(code) if str(code).isdigit() else 0
        _access_logger.info(
            '%s "%s" %s %s %s',
            self.address_string(),
            getattr(self, "requestline", "-"),
            code,
            size,
            took,
            extra={"status": status},
        )

    def log_message(self, format: str, *args: Any) -> None:
        _access_logger.info("%s " + format, self.address_string(), *args)

    def log_error(self, format: str, *args: Any) -> None:
        _access_logger.warning("%s " + format, self.address_string(), *args)


class _WerkzeugServer(ThreadedWSGIServer):
    """Werkzeug's threaded server on an existing socket; threads and accepting are ours."""

    def log(self, type: str, message: str, *args: Any) -> None:
        _logger.log(logging.getLevelName(type.upper()), message.rstrip(), *args)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _logger.exception("unexpected error while serving %s", client_address)


class ThreadedServer:
    """The default mode: one thread per connection, a control loop in the main thread."""

    mode = "threaded"

    def __init__(
        self,
        app: WSGIApplication,
        sock: socket.socket,
        *,
        max_threads: int | None = None,
        shutdown_grace: float = 5.0,
        reload_grace: float = 5.0,
        on_changes: Callable[[FileChanges], bool] | None = None,
    ) -> None:
        host, port = sock.getsockname()[:2]
        self.httpd = _WerkzeugServer(host, port, app, handler=RequestHandler, fd=sock.fileno())
        sock.close()  # werkzeug serves a duplicate of it
        self.listener = self.httpd.socket
        self.listener.setblocking(False)
        self.shutdown_grace = shutdown_grace
        self.reload_grace = reload_grace
        self.on_changes = on_changes  # decides whether a batch of changed files reloads
        self.reload: Reload | None = None  # what asked for the reload under way, and when
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._threads: set[RequestThread] = set()  # the pool: busy and idle threads
        self._idle: list[RequestThread] = []  # the idle ones, most recently used last
        self._threads_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_threads) if max_threads else None
        self._accepting = False
        self._draining = False
        self._thread_count = 0
        self._outcome: Outcome | None = None
        self.unfinished = 0  # requests still running when run() returned

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    # --- events ---

    def notify(self, event: Any) -> None:
        """Post an event and wake the control loop. Safe from signal handlers and threads."""
        self.events.put(event)
        with contextlib.suppress(BlockingIOError):  # a full pipe is a pending wake-up
            os.write(self._wake_write, b"\0")

    def _handle_events(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self.handle_event(event)

    def handle_event(self, event: Any) -> None:
        if event in STOP_SIGNALS:
            if self._outcome is None:
                self._outcome = Outcome.STOP
            elif self._draining and self._outcome is Outcome.STOP:
                self._outcome = Outcome.FORCED
            elif self._draining:  # stop asked for during a reload: stop instead
                self._outcome = Outcome.STOP
        elif self._outcome is not None:
            return  # a reload or stop is under way: the next image sees every change
        elif event == signal.SIGHUP:
            self._reload("SIGHUP", time.monotonic())
        elif isinstance(event, FileChanges):
            if self.on_changes is not None and self.on_changes(event):
                self._reload(describe_paths(event.paths), event.first_seen)
        elif event == "slot-free" and self._slots is not None:
            self._set_accepting(True)

    def _reload(self, cause: str, first_seen: float) -> None:
        self._outcome = Outcome.RELOAD
        self.reload = Reload(cause, first_seen, decided=time.monotonic())

    # --- serving ---

    def run(self, on_ready: Callable[[], None] | None = None) -> Outcome:
        """Serve until a stop or reload is asked for; then drain. Returns what ended it.
        ``on_ready`` runs once the signal handlers are in place (so a signal sent by whoever
        saw the readiness announcement is handled, never fatal)."""
        with capture_signals(GAP_SIGNALS, self.notify):
            if on_ready is not None:
                on_ready()
            self._set_accepting(True)
            while self._outcome is None:
                for key, _ in self._selector.select():
                    if key.data == "wake":
                        self._handle_events()
                    elif self._outcome is None:
                        self._accept()
            self._set_accepting(False)
            if self._outcome is Outcome.STOP:
                self.listener.close()  # new clients are refused from now on
                self._log_stopping()
            self._drain()
        return self._outcome

    def _set_accepting(self, accepting: bool) -> None:
        if accepting and not self._accepting:
            self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        elif not accepting and self._accepting:
            self._selector.unregister(self.listener)
        self._accepting = accepting

    def _accept(self) -> None:
        """Accept what the backlog holds (up to a batch), one thread per connection."""
        for _ in range(ACCEPT_BATCH):
            if self._slots is not None and not self._slots.acquire(blocking=False):
                self._set_accepting(False)  # full: connections wait in the backlog
                return
            try:
                connection, client = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError, InterruptedError):
                if self._slots is not None:
                    self._slots.release()
                return
            self._dispatch(connection, client)

    def _dispatch(self, connection: socket.socket, client: Any) -> None:
        """Hand the connection to an idle pooled thread, or to a new one. Starting a thread
        makes the caller wait until it runs; handing over to an idle one does not."""
        with self._threads_lock:
            thread = self._idle.pop() if self._idle else None
            if thread is None:
                self._thread_count += 1
                thread = RequestThread(self._work, self._thread_count)
                self._threads.add(thread)
            thread.connection = connection
            thread.started_at = time.monotonic()
            thread.waiting = True
        thread.jobs.put((connection, client))
        if not thread.is_alive():
            thread.start()

    def _work(self, thread: RequestThread) -> None:
        """A pooled thread's life: serve each connection handed over, until retired."""
        while True:
            try:
                job = thread.jobs.get(timeout=IDLE_THREAD_TIMEOUT)
            except queue.Empty:
                with self._threads_lock:
                    if thread in self._idle:  # nobody picked it meanwhile: retire
                        self._idle.remove(thread)
                        self._threads.discard(thread)
                        return
                job = thread.jobs.get()  # picked just now: the connection is coming
            if job is None:
                return
            self._serve_connection(thread, *job)

    def _serve_connection(
        self, thread: RequestThread, connection: socket.socket, client: Any
    ) -> None:
        try:
            self.httpd.finish_request(connection, client)
        except OSError:
            pass  # the client went away
        except Exception:
            self.httpd.handle_error(connection, client)
        finally:
            self.httpd.shutdown_request(connection)
            with self._threads_lock:
                thread.connection = None
                self._idle.append(thread)
            if self._slots is not None:
                self._slots.release()
                self.notify("slot-free")
            if self._draining:
                self.notify("request-done")

    # --- stopping ---

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

    def busy_requests(self) -> list[RequestThread]:
        """The threads inside the app right now."""
        with self._threads_lock:
            return [thread for thread in self._threads if thread.request is not None]

    def _close_idle_connections(self) -> None:
        """End the connections on which no request has begun (a browser's preconnect), so
        they don't hold a stop or reload up. Only the receiving side is shut: a request
        whose bytes were already read into its handler's buffer still gets its answer."""
        with self._threads_lock:
            for thread in self._threads:
                connection = thread.connection
                if connection is not None and thread.waiting and not _readable(connection):
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RD)

    def _connections(self) -> int:
        with self._threads_lock:
            return sum(1 for thread in self._threads if thread.connection is not None)

    def _drain(self) -> None:
        """Let running requests finish within the grace period. A second INT/TERM ends the
        wait at once."""
        self._draining = True
        self._close_idle_connections()
        grace = self.reload_grace if self._outcome is Outcome.RELOAD else self.shutdown_grace
        deadline = time.monotonic() + grace
        while self._outcome is not Outcome.FORCED:
            remaining = deadline - time.monotonic()
            if not self._connections() or remaining <= 0:
                break
            for key, _ in self._selector.select(timeout=remaining):
                if key.data == "wake":
                    self._handle_events()
        self.unfinished = self._connections()
        if self._outcome is Outcome.FORCED:
            _logger.warning("forced stop: %d request(s) cut short", self.unfinished)
        elif self.unfinished:
            _logger.warning(
                "%d request(s) still running after the %gs grace period are cut short",
                self.unfinished,
                grace,
            )

    def close(self) -> None:
        """Release everything; idle pooled threads end (they are not daemons)."""
        with self._threads_lock:
            for thread in self._threads:
                thread.jobs.put(None)
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)
        with contextlib.suppress(OSError):
            self.listener.close()


def _readable(connection: socket.socket) -> bool:
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(connection, selectors.EVENT_READ)
        except (ValueError, OSError):
            return False
        return bool(selector.select(timeout=0))
