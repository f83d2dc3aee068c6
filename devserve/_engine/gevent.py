"""Gevent mode: the app served by a greenlet per connection, for long-polling and other work
with many idle connections, on devserve's own HTTP engine (the threaded and prefork modes'
strict request checks: one parser for every mode, none of gevent's ``pywsgi``).

``devserve gevent`` monkey-patches before anything else is imported (``__main__.py`` does it,
on every re-exec too, since a reload re-runs the same command line). :class:`GeventServer`
is a :class:`~devserve.servers.ControlLoop` like the threaded server: signals and the watcher
post events, and the main greenlet handles them. Signals go through ``gevent.signal_handler``:
a plain Python handler only runs when the main greenlet runs Python code, which it may not
do for a long time while the hub waits.

A reload keeps the listen socket, lets running requests finish, and hands connections that
wait for their next request to the next image, untouched (nothing of them was read).

In prefork mode, :class:`~devserve._engine.evented_child.EventedChild` is the master's side:
it runs ``devserve gevent`` on ``--gevent-port`` as a child (Odoo's long-polling port), on a
socket the master keeps, so a respawn or a reload never refuses a client.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from devserve._engine.children import orphaned, set_title
from devserve._engine.connection import HTTPConnection
from devserve._engine.devroutes import DevRoutes
from devserve._engine.evented_child import (
    INSTALL_HINT,
    PARENT_ENV,
    SOCKET_ENV,
    available,
)
from devserve._engine.wire import BODY_TIMEOUT, RequestInfo, ServerInfo, close_connection
from devserve.limits import Limits
from devserve.reloader import GAP_SIGNALS, FileChanges
from devserve.servers import IDLE_CONNECTION_TIMEOUT, ControlLoop, Outcome

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = [
    "INSTALL_HINT",
    "GeventServer",
    "available",
    "child_socket",
    "ensure_patched",
    "parent_pid",
]

_logger = logging.getLogger("devserve.evented")

WATCHDOG_EVERY = 1.0  # seconds between two checks of the parent and of memory
FIRST_REQUEST_WAIT = 1.0  # stopping: how long a connection just accepted gets to send


def is_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def ensure_patched() -> None:
    """Patch now if ``__main__`` did not (``cli.main(["gevent", ...])`` called from Python):
    late, but better than greenlets that block each other."""
    if not is_patched():
        from gevent import monkey

        monkey.patch_all()


def parent_pid() -> int | None:
    """The prefork master's PID when this process is its evented child."""
    with contextlib.suppress(ValueError):
        return int(os.environ.get(PARENT_ENV, ""))
    return None


def child_socket() -> socket.socket | None:
    """The listen socket the prefork master passed to its evented child (once)."""
    descriptor = os.environ.pop(SOCKET_ENV, "")
    if not descriptor.isdigit():
        return None
    sock = socket.socket(fileno=int(descriptor))
    sock.set_inheritable(False)
    return sock


class GeventServer(ControlLoop):
    """devserve's own HTTP engine (:class:`~devserve._engine.connection.HTTPConnection`,
    the threaded and prefork modes' strict checks) with a greenlet per connection, run by
    a control loop in the main greenlet."""

    mode = "gevent"

    def __init__(
        self,
        app: WSGIApplication,
        sock: socket.socket,
        *,
        shutdown_grace: float = 5.0,
        reload_grace: float = 5.0,
        on_changes: Callable[[FileChanges], frozenset[str]] | None = None,
        signal_actions: Mapping[int, Callable[[], None]] | None = None,
        connections: Iterable[tuple[socket.socket, bytes]] = (),
        limits: Limits | None = None,
        parent: int | None = None,
        max_body: int = ServerInfo.max_body,
        own: DevRoutes | None = None,
    ) -> None:
        import gevent.event
        import gevent.pool

        super().__init__(
            sock,
            shutdown_grace=shutdown_grace,
            reload_grace=reload_grace,
            on_changes=on_changes,
            signal_actions=signal_actions,
            own=own,
        )
        self.listener.setblocking(True)  # a greenlet waits in accept(), the hub meanwhile runs
        self.app = app
        host, port = sock.getsockname()[:2]
        self.server_info = ServerInfo(host, port, max_body=max_body, **self.own_routes())
        self.limits = limits or Limits()
        self.parent = parent  # the prefork master, when this is its evented child
        self.served_first = gevent.event.Event()
        self.requests: dict[Any, RequestInfo] = {}  # greenlet -> the request it serves
        # Readable once draining starts: connections waiting for a request wake on it.
        self.drain_read, self._drain_write = os.pipe()
        self._adopted = list(connections)
        # Every connection's greenlet, from the moment it is accepted (before it runs): a
        # drain waits for them all, or a connection accepted last would be reset at exit.
        self.connections = gevent.pool.Pool()
        self._acceptor: Any = None
        self._watchdog_greenlet: Any = None

    @property
    def description(self) -> str:
        return "gevent" if self.parent is None else f"gevent, evented child of {self.parent}"

    @contextlib.contextmanager
    def _signals_handled(self) -> Iterator[None]:
        """Through ``gevent.signal_handler``: a plain handler would wait for the main
        greenlet to run Python code, which it may not do for a long time."""
        import gevent

        handled = set(GAP_SIGNALS)
        if self.parent is not None:  # the terminal's CTRL-C: the master stops this child
            handled.discard(signal.SIGINT)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        handlers = [gevent.signal_handler(s, self.notify, s) for s in handled]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GAP_SIGNALS)
        try:
            yield
        finally:
            for handler in handlers:
                handler.cancel()

    def _start(self) -> None:
        import gevent

        if self.parent is not None:
            set_title("evented child")
        self._acceptor = gevent.spawn(self._accept)
        for connection, received in self._adopted:  # handed over by the previous image
            self._adopt(connection, received)
        self._adopted.clear()
        self._watchdog_greenlet = gevent.spawn(self._watchdog)

    def _stop_accepting(self) -> None:
        self._watchdog_greenlet.kill(block=False)
        self._acceptor.kill()  # no connection is accepted from now on

    # --- connections ---

    def _accept(self) -> None:
        import gevent

        while True:
            try:
                connection, client = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError, InterruptedError):
                continue
            except OSError as error:  # out of descriptors: the rest waits in the backlog
                _logger.warning("cannot accept connections: %s", error.strerror)
                gevent.sleep(1.0)
                continue
            try:
                with contextlib.suppress(OSError):  # responses leave at once
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connections.spawn(self._serve, connection, client, b"")
            except Exception as error:  # that connection goes; accepting goes on
                self._errors.add(error)
                connection.close()

    def _adopt(self, connection: socket.socket, received: bytes) -> None:
        try:
            client = connection.getpeername()
        except OSError:
            connection.close()
            return
        from gevent import socket as gevent_socket

        cooperative = gevent_socket.socket(fileno=connection.detach())
        self.connections.spawn(self._serve, cooperative, client, received)

    def _serve(self, connection: Any, client: Any, received: bytes) -> None:
        """One connection's greenlet: its requests, one after the other; between them it
        waits for the next one, or for a drain (then it is handed over, or closed)."""
        from gevent import getcurrent

        greenlet = getcurrent()

        def track(info: RequestInfo | None) -> None:
            if info is not None:
                self.requests[greenlet] = info
                return
            self.requests.pop(greenlet, None)
            self.served_first.set()
            if self._draining:
                self.notify("request-done")

        http = HTTPConnection(connection, client, self.app, self.server_info, track, received)
        keep, first = True, True
        try:
            while keep:
                if not http.head_complete and not http.received:  # nothing read of the next
                    verdict = self._wait_for_request(connection, first)
                    if verdict != "request":
                        keep = verdict == "hand-over"
                        if keep:
                            self.handed_connections.append(
                                (socket.socket(fileno=connection.detach()), b"")
                            )
                        return
                connection.settimeout(BODY_TIMEOUT)
                keep = http.serve()
                first = False
        except Exception:  # nothing of a connection may end the process
            _logger.exception("unexpected error while serving %s", client)
            keep = False
        finally:
            if not keep:
                close_connection(connection, http.unread)
            if self._draining:
                self.notify("connection-gone")

    def _wait_for_request(self, connection: Any, first: bool) -> str:
        """Until the client sends (``"request"``), a drain starts, or the connection has
        been idle too long (``"close"``). Draining: a reload hands the connection to the
        next image untouched (``"hand-over"``); a stop serves the request whose bytes are
        in (a retiring evented child must answer it), waiting a little for the first
        request of a connection just accepted."""
        import select

        from gevent import select as gevent_select

        poller = gevent_select.poll()  # not select(): any descriptor number
        poller.register(connection.fileno(), select.POLLIN)
        if not self._draining:
            poller.register(self.drain_read, select.POLLIN)
            ready = poller.poll(IDLE_CONNECTION_TIMEOUT * 1000)
            if not ready:
                return "close"
            if not self._draining:
                return "request"
            poller.unregister(self.drain_read)
        if self._outcome is Outcome.RELOAD:
            return "hand-over"
        wait = FIRST_REQUEST_WAIT if first else 0
        return "request" if poller.poll(wait * 1000) else "close"

    def handle_event(self, event: Any) -> None:
        super().handle_event(event)
        if event == signal.SIGQUIT:
            dump_greenlets(self.requests)

    def handle_mode_event(self, event: Any) -> None:
        if event == "parent-gone" and self._outcome is None:
            _logger.warning("the prefork master %s is gone: stopping", self.parent)
            self._outcome = Outcome.STOP
        elif event == "memory-soft" and self._outcome is None:
            over = f"memory above --limit-memory-soft ({self.limits.memory_soft} MiB)"
            if self.parent is not None:
                _logger.warning("%s: exiting; the master starts another", over)
                self._outcome = Outcome.STOP
            else:
                _logger.warning("%s: reloading once requests finish", over)
                self._reload(over, time.monotonic())

    def _watchdog(self) -> None:
        """The parent still ours, memory below the soft limit: checked every second."""
        import gevent

        while True:
            gevent.sleep(WATCHDOG_EVERY)
            if self.parent is not None and orphaned(self.parent):
                self.notify("parent-gone")
                return
            if self.limits.over_memory_soft():
                self.notify("memory-soft")
                return

    def busy_requests(self) -> list[RequestInfo]:
        return list(self.requests.values())

    def in_flight(self) -> list[RequestInfo]:
        return list(self.requests.values())

    def _drain(self) -> None:
        """Idle connections are handed over (reload) or closed (stop) at once; running
        requests get the grace period, and a second INT/TERM ends the wait."""
        self._draining = True
        os.write(self._drain_write, b"\0")  # wakes every connection waiting for a request
        grace = self.reload_grace if self._outcome is Outcome.RELOAD else self.shutdown_grace
        deadline = time.monotonic() + grace
        while self._outcome is not Outcome.FORCED and len(self.connections):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Greenlets post an event as they finish; re-check at least every 50 ms.
            for key, _ in self._selector.select(timeout=min(remaining, 0.05)):
                if key.data == "wake":
                    self._handle_events()
        self.unfinished = len(self.requests)
        if self._outcome is Outcome.FORCED:
            _logger.warning("forced stop: %d request(s) cut short", self.unfinished)
        elif self.unfinished:
            _logger.warning(
                "%d request(s) still running after the %gs grace period are cut short",
                self.unfinished,
                grace,
            )

    def close(self) -> None:
        with self._closing:
            self._closed = True
        for connection, _ in self.handed_connections:
            connection.close()
        self._close_loop()
        os.close(self.drain_read)
        os.close(self._drain_write)
        with contextlib.suppress(OSError):
            self.listener.close()


def dump_greenlets(requests: Mapping[Any, RequestInfo]) -> None:
    """Log the stack of every live greenlet, with the request it serves and for how long."""
    import threading

    import greenlet

    current = greenlet.getcurrent()
    # Patched threads are greenlets, identified by the greenlet's id: show their names.
    thread_names = {thread.ident: thread.name for thread in threading.enumerate()}
    lines = []
    for item in gc.get_objects():
        if not isinstance(item, greenlet.greenlet) or item.dead:
            continue
        frame = sys._getframe() if item is current else item.gr_frame
        if frame is None and item is not current:
            continue  # the hub (in C), or not started yet
        header = thread_names.get(id(item)) or getattr(item, "name", None) or "greenlet"
        request = requests.get(item)
        if request is not None:
            header += (
                f": {request.method} {request.path} from {request.client}, "
                f"running for {request.age:.1f}s"
            )
        elif item is current:
            header += " (main, running this dump)"
        lines.append(f"# greenlet {header}")
        lines.extend(line.rstrip("\n") for line in traceback.format_stack(frame))
    count = len([line for line in lines if line.startswith("# greenlet")])
    _logger.info("greenlets of process %d (%d):\n%s", os.getpid(), count, "\n".join(lines))
